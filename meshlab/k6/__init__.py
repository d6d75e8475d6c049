"""Reading k6's own output files (raw CSV, summary export)."""
