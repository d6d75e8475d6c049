"""One trial, whatever testbed runs it: its slot in the run, its k6 load, the evidence a
testbed hands over, and the judge that turns evidence into trial.json (one window, every
figure beside an independent one, the gates)."""
