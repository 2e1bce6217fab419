"""`python -m supervisor_tree.cli`: what the detached node and the tests run."""

from supervisor_tree.cli.main import main

main()
