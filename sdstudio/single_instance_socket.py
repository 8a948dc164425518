"""Where the single-instance socket lives, and who is at the other end of it.

A socket in a folder every user can write to (``/tmp``) can be taken by
another user first: that user would then receive the paths this user opens.
So on Unix the socket goes into a folder only this user can enter:

1. ``$XDG_RUNTIME_DIR`` (Linux desktops: ``/run/user/UID``, mode 0700);
2. else ``ipc`` in the app's cache folder, made with mode 0700;
3. else, when that path is too long for a Unix socket, ``sdstudio-UID`` in the
   temporary folder, made with mode 0700.

A folder is used only if it is a real folder (not a link) that belongs to this
user and that no one else may read or write; one owned by someone else is
refused, never repaired. On macOS the same rules apply (there is no runtime
folder, so the cache folder under ``~/Library/Caches`` is used).

On Linux both ends also ask the kernel who the peer is (``SO_PEERCRED``) and
talk only to their own user. Elsewhere the private folder is what keeps other
users out.

On Windows the socket is a named pipe. Qt's ``UserAccessOption`` gives the
pipe the app creates an access list for this user alone, but pipe names are
one namespace for the whole machine, and the launcher cannot ask who created
the pipe it reaches.

This module does not import Qt.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import socket
import stat
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path

from sdstudio.engine.paths import AppPaths

log = logging.getLogger(__name__)

MAX_SOCKET_PATH_BYTES = 96
"""Longest socket path used. The system limit is 103 bytes on macOS and 107 on
Linux, and Qt first binds in a temporary folder next to the socket, whose path
is up to 9 bytes longer than the folder's."""
PRIVATE_FOLDER_NAME = "ipc"
RUNTIME_DIR_VARIABLE = "XDG_RUNTIME_DIR"
LIVE_CHECK_TIMEOUT_S = 0.5


def server_name(paths: AppPaths, environ: Mapping[str, str] | None = None) -> str | None:
    """The local socket name for this user and data folder; ``None`` if no safe place exists.

    On Unix it is the full path of a socket in a private folder (see the
    module's notes); on Windows, a pipe name. The name is a hash, because
    Unix socket paths are short, and it includes the user because Windows
    pipe names are shared by all users.
    """
    digest = hashlib.sha256(f"{_user()}\0{paths.data_dir}".encode()).hexdigest()
    name = f"sdstudio-{digest[:20]}"
    if os.name == "nt":
        return name
    env = os.environ if environ is None else environ
    for folder, create in _candidate_folders(paths, env):
        path = os.path.join(folder, name)
        if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
            log.debug("Socket path %s is too long for a Unix socket", path)
            continue
        problem = private_folder_problem(folder, create=create)
        if problem is None:
            return path
        log.warning("Not using %s for the single-instance socket: %s", folder, problem)
    log.warning("No private folder for the single-instance socket: each launch opens a window")
    return None


def private_folder_problem(folder: str | Path, *, create: bool = False) -> str | None:
    """Why ``folder`` cannot hold this user's socket, or ``None`` when it can.

    With ``create``, a missing folder is made with mode 0700 (its parents with
    the usual permissions). An existing folder is checked as found.
    """
    folder = Path(folder)
    if create:
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as error:
            return f"cannot create it ({error.strerror or error})"
    try:
        status = os.lstat(folder)
    except OSError as error:
        return f"cannot read it ({error.strerror or error})"
    if stat.S_ISLNK(status.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(status.st_mode):
        return "it is not a folder"
    if status.st_uid != os.getuid():
        return f"it belongs to another user (uid {status.st_uid})"
    if status.st_mode & 0o077:
        return f"others may use it (mode {stat.S_IMODE(status.st_mode):o}; 700 is needed)"
    return None


def peer_uid(descriptor: int) -> int | None:
    """The user id of the process at the other end of a connected Unix socket.

    ``None`` where the system cannot tell (only Linux's ``SO_PEERCRED`` is
    asked) or the descriptor is not such a socket.
    """
    if not hasattr(socket, "SO_PEERCRED") or descriptor < 0:
        return None
    try:
        # Wraps the descriptor without duplicating it, so this works even when
        # the process has run out of descriptors; detach() leaves it open.
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=descriptor)
    except OSError:
        return None
    try:
        credentials = connection.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
        )
    except OSError:
        return None
    finally:
        connection.detach()
    _pid, uid, _gid = struct.unpack("3i", credentials)
    return uid


def foreign_peer(descriptor: int) -> str | None:
    """Why the peer on ``descriptor`` is not to be trusted, or ``None`` if it is this user.

    Where the system cannot name the peer (not Linux), the private folder the
    socket lives in is the check, and ``None`` is returned.
    """
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    uid = peer_uid(descriptor)
    if uid is None:
        return "the system cannot tell which user it belongs to"
    if uid != os.getuid():
        return f"it belongs to another user (uid {uid})"
    return None


def socket_is_live(path: str) -> bool:
    """Whether a process accepts connections on the Unix socket ``path``.

    False for a socket file a crashed app left behind (nobody accepts), and
    for a path that does not exist. Raises ``OSError`` when no socket can be
    made to look with (the process has no descriptor left).
    """
    if os.name == "nt" or not os.path.isabs(path):
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(LIVE_CHECK_TIMEOUT_S)
    try:
        probe.connect(path)
    except (TimeoutError, BlockingIOError):
        return True  # a full backlog: someone is there, only busy
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _candidate_folders(paths: AppPaths, env: Mapping[str, str]) -> list[tuple[str, bool]]:
    """Folders to try, in order, each with whether sdstudio may create it."""
    candidates: list[tuple[str, bool]] = []
    runtime = env.get(RUNTIME_DIR_VARIABLE, "")
    if os.path.isabs(runtime):
        candidates.append((runtime, False))
    candidates.append((str(paths.cache_dir / PRIVATE_FOLDER_NAME), True))
    candidates.append((os.path.join(tempfile.gettempdir(), f"sdstudio-{os.getuid()}"), True))
    return candidates


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid()) if hasattr(os, "getuid") else "user"
