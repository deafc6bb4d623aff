"""`python -m deploykit ...` is the `deploykit` command."""

from deploykit.entry import main

main()
