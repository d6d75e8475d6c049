"""`python -m meshlab ...` is the `meshlab` command (the playbooks call it this way, with the
venv's interpreter, so no PATH is needed)."""

from meshlab.cli import main

main()
