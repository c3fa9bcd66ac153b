"""Lets `python -m pong_train` run the command line."""

from pong_train.cli import main

raise SystemExit(main())
