"""The `taskmem` command line.

    taskmem memorize VIDEO_OR_MANIFEST --model SPEC [--tag TAG] [--interval 10] ...
    taskmem perceive VIDEO_OR_MANIFEST [--no-faces] [--no-asr] ...
    taskmem show RUN [--kind episodic|semantic|both]
    taskmem bench BENCH --source PATH --videos DIR --model SPEC --answerer SPEC [--plan] ...
    taskmem eval BENCH --source PATH --memories DIR --tag TAG --answerer SPEC [--judge SPEC] ...
    taskmem judge-agreement RESULTS --judge SPEC
    taskmem publish BENCH --source PATH [--push REPO_ID]
    taskmem import FOLDER --tag TAG [--as TAG] [--out DIR]
    taskmem export-training RUN... --out DIR
    taskmem score-memory RUN --judge SPEC --video-judge SPEC [--rollouts TAG]
    taskmem rollout RUN --n N --model SPEC
    taskmem pairs RUN --rollouts TAG --tasks FILE --judge SPEC --video-judge SPEC
    taskmem adapt --model hf:DIR --pairs FILE --layers 22 --out DIR [--steps 10 --lr 1e-3]
    taskmem adapt-export --model hf:DIR --steer FILE --out CKPT [--scale-layer 22 --scale 1.5]
    taskmem reproduce [--profile smoke|demo|paper] [--only NOTEBOOK] [-p KEY=VALUE]

The options of each command that set a stage's parameters are generated from that stage's
dataclass (`COMMAND_PARAMS`, `cli.options`): their names, types, defaults and help text live in
the dataclass only. Errors the user can fix (a missing video, an unknown model spec, a missing
endpoint config or key) print one line and exit with status 2 (1 for a failed model call, clip or
question: a server still unreachable after its retries; 130 after Ctrl-C).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from taskmem_lab.backends.steer import SteerExportParams
from taskmem_lab.cli import bench, data, evaluate, lab, memorize, steer, training
from taskmem_lab.errors import ModelError, ParseError, TaskmemError
from taskmem_lab.evaluation.agreement import AgreementParams
from taskmem_lab.evaluation.evaluate import EvalParams
from taskmem_lab.evaluation.qa import QAParams
from taskmem_lab.params import MemorizeParams
from taskmem_lab.perception.params import PerceptionChoices
from taskmem_lab.training.adapt import AdaptParams
from taskmem_lab.training.export import ExportParams
from taskmem_lab.training.pairs import PairParams
from taskmem_lab.training.reward_rules import RewardParams
from taskmem_lab.training.rollouts import RolloutParams

# Per command, the parameter dataclasses its options come from, and the fields it exposes
# (None: all of them). A test checks every option's default against its dataclass.
COMMAND_PARAMS: dict[str, list[tuple[type, tuple[str, ...] | None]]] = {
    "memorize": [(MemorizeParams, None), (PerceptionChoices, None)],
    "perceive": [(MemorizeParams, memorize.SCHEDULE), (PerceptionChoices, None)],
    "eval": [(QAParams, None), (EvalParams, None)],
    "judge-agreement": [(AgreementParams, None)],
    "bench": [
        (MemorizeParams, bench.BENCH_SCHEDULE),
        (PerceptionChoices, None),
        (QAParams, bench.BENCH_QA),
        (EvalParams, None),
    ],
    "export-training": [(ExportParams, None)],
    "score-memory": [(RewardParams, None)],
    "rollout": [(RolloutParams, None)],
    "pairs": [(PairParams, None), (RewardParams, None)],
    "adapt-export": [(SteerExportParams, None)],
    "adapt": [(AdaptParams, None)],
}


EXAMPLES = """examples:
  taskmem reproduce --profile smoke --work out     # everything offline, with a fake model
  taskmem memorize talk.mp4 --model fake --asr     # a memory of one video, offline
  taskmem eval videomme --source lmms-lab/Video-MME --memories runs --tag gpt4o \\
      --answerer openai:gpt-4o                     # answer a benchmark from stored memories

`taskmem COMMAND --help` lists a command's options. Documentation: README.md and docs/
(docs/cli.md for every command and option) in the taskmem_lab repository."""


def build_parser() -> argparse.ArgumentParser:
    """The `taskmem` parser with every command."""
    parser = argparse.ArgumentParser(
        prog="taskmem",
        description=__doc__.split("\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log retries and warnings")
    sub = parser.add_subparsers(dest="command", required=True)
    memorize.register(sub)
    evaluate.register(sub)
    bench.register(sub)
    data.register(sub)
    training.register(sub)
    steer.register(sub)
    lab.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `taskmem` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    args.argv = None if argv is None else list(argv)  # `bench` prints a resume command
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # the toolkit's own warnings (retries, clamps, take-overs) always show
        logging.getLogger("taskmem_lab").setLevel(logging.WARNING)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at exit
        return code
    except (ModelError, ParseError) as exc:
        print(f"taskmem: error: {exc}", file=sys.stderr)
        return 1
    except TaskmemError as exc:
        print(f"taskmem: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `taskmem show RUN | head`: the reader left; stop quietly, as `cat` would.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        print(f"taskmem: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "taskmem: interrupted; finished clips are stored, run again to resume", file=sys.stderr
        )
        return 130


def describe_os_error(exc: OSError) -> str:
    """One line for a filesystem fault, saying what is kept and what to do."""
    import errno

    where = f" {exc.filename}" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"disk full writing{where}; nothing finished is lost (every stored clip or answer "
            "is kept): free space and run again to resume"
        )
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (
            f"cannot write{where} ({exc.strerror}); choose a writable --out (or --cache), "
            "nothing was lost"
        )
    return f"{exc.strerror or exc}{where}"


if __name__ == "__main__":
    sys.exit(main())
