"""`python -m eventstore`: the same as the `eventstore` command."""

from .cli import main

main()
