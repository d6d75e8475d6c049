"""What a run is made of, as data: the experiment definition (spec), the run format that
owns manifest.json and trial.json (format), and the run directory on disk (store).

Everything that writes or reads a run goes through here: the engine and the judge write, the
analysis reads, the synthetic generator generates, all with the same models."""
