"""`python -m radiogenomics <subcommand> ...`: the same as the `radiogenomics` command."""

from radiogenomics.cli import main

if __name__ == "__main__":
    main()
