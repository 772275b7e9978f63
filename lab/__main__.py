import faulthandler
import signal
import sys

# `kill -USR1 PID` prints where every thread of a job (or of the CLI) is, to its log: how to see what a hung one waits on.
faulthandler.register(signal.SIGUSR1, all_threads=True)

if sys.argv[1:2] == ["train"] and "--run-id" in sys.argv:
    # A queued job (`lab.jobs._spawn`): a stop may come the moment it is spawned, seconds before its stage's
    # imports are done, and SIGTERM's default would kill it without a word. From here on a stop is a request.
    from lab import jobs

    jobs.install_signal_handlers()

from lab.cli import main  # noqa: E402

raise SystemExit(main())
