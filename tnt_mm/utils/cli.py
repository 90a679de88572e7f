"""How the command-line tools fail: a user's mistake prints one ``error: ...`` line and exits
non-zero; anything else is a bug and keeps its traceback. ``--debug`` (or ``TNT_MM_DEBUG=1``)
shows the traceback of a user's mistake too.

    if __name__ == '__main__':
        run_cli(main)        # main(argv) raises; run_cli turns user errors into messages
"""
import os
import os.path as osp
import sys
from typing import Callable, Optional, Sequence


class UserError(Exception):
    """A mistake in what the user gave a tool; the message names it and says how to fix it."""
    exit_code = 1


class UsageError(UserError):
    """A bad command-line argument (exit code 2, as argparse's)."""
    exit_code = 2


def user_errors() -> tuple:
    """The exception types that are the user's to fix. Imported here, not at the top: the
    modules that raise them import torch."""
    from tnt_mm.models.backbones.tnt_convert import CheckpointFormatError
    from tnt_mm.utils.data_check import DataCheckError
    return (UserError, DataCheckError, CheckpointFormatError, FileNotFoundError)


def add_debug_arg(parser) -> None:
    parser.add_argument('--debug', action='store_true',
                        help='show the traceback of an error (also TNT_MM_DEBUG=1)')


def require_file(path: str, what: str) -> None:
    """Stop with a usage error when a file named on the command line does not exist (URLs and
    other ``scheme://`` paths are left to their loaders)."""
    if '://' not in path and not osp.isfile(path):
        raise UsageError(f'{what} {path} does not exist')


def add_image_tool_args(parser, task: str, columns: int) -> None:
    """The arguments every prediction-picture tool of ``tools/demo/`` takes."""
    parser.add_argument('config', help=f'{task} config')
    parser.add_argument('checkpoint', help='checkpoint written by tools/train.py')
    parser.add_argument('images', nargs='+', help='image files')
    parser.add_argument('--out', default='predictions.png', help='summary picture to write')
    parser.add_argument('--columns', type=int, default=columns,
                        help=f'tiles per row (default {columns})')
    parser.add_argument('--device', default='cpu')
    add_debug_arg(parser)


def check_image_tool_args(args) -> None:
    """Stop with a usage error before a model is built: missing files, a bad ``--columns``."""
    require_file(args.config, 'config')
    require_file(args.checkpoint, 'checkpoint')
    for path in args.images:
        require_file(path, 'image')
    if args.columns < 1:
        raise UsageError(f'--columns {args.columns}: must be at least 1')


def run_cli(main: Callable, argv: Optional[Sequence[str]] = None):
    """Call ``main(argv)`` (``sys.argv[1:]`` by default) with the package's safe checkpoint
    loading (every tool reads local checkpoints weights-only, with clear refusals); a user
    error prints ``error: ...`` to stderr and exits with its code, 1 or 2."""
    from tnt_mm.engine.checkpoint import safe_checkpoint_loading
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = '--debug' in argv or os.environ.get('TNT_MM_DEBUG') == '1'
    try:
        with safe_checkpoint_loading():
            return main(argv)
    except Exception as exc:
        if debug or not isinstance(exc, user_errors()):
            raise
        print(f'error: {exc}', file=sys.stderr)
        sys.exit(getattr(exc, 'exit_code', 1))
