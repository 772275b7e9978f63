import sys

if sys.argv[1:2] == ["train"] and "--run-id" in sys.argv:
    # A queued job (`lab.jobs._spawn`): a stop may come the moment it is spawned, seconds before its stage's
    # imports are done, and SIGTERM's default would kill it without a word. From here on a stop is a request.
    from lab import jobs

    jobs.install_signal_handlers()

from lab.cli import main  # noqa: E402

raise SystemExit(main())
