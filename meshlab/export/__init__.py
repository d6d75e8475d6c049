"""`meshlab export RUN_DIR --format smp|csv`: a run's results in formats others read."""
