"""One window per user and data folder: a second launch hands its files to the first.

A file manager runs ``sdstudio IMAGE`` for every image the user opens with it.
The first launch listens on a local socket (a Unix socket in a folder only the
user can enter, or a named pipe on Windows: see
:mod:`sdstudio.single_instance_socket`); a later launch with the same data
folder connects, checks that the app there runs as the same user, sends the
absolute paths of its files, waits for the running app to acknowledge them,
and exits without building a window.

The protocol is one line of JSON each way::

    launcher -> app:  {"version": 1, "files": ["/abs/a.png", ...]}
    app -> launcher:  {"version": 1, "ok": true}

The server side is asynchronous (driven by ``readyRead``), so a client that
connects and sends nothing, or sends garbage, never blocks the GUI thread. It
talks to at most :data:`MAX_CONNECTIONS` launchers at once, drops each after
:data:`CLIENT_TIMEOUT_MS`, and listens again if the system made it stop (for
instance when the process ran out of file descriptors).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable

from PySide6.QtCore import QEvent, QObject, QTimer, Signal
from PySide6.QtGui import QFileOpenEvent
from PySide6.QtNetwork import QLocalServer, QLocalSocket

from sdstudio.engine.paths import AppPaths
from sdstudio.single_instance_socket import foreign_peer, server_name, socket_is_live

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 1 << 20
"""Longer messages are refused: thousands of paths fit well under this."""
MAX_REPLY_BYTES = 4096
CONNECT_TIMEOUT_MS = 500
REPLY_TIMEOUT_MS = 5_000
"""How long a launcher waits for the running app to acknowledge its files."""
CLIENT_TIMEOUT_MS = 5_000
"""How long the running app keeps a connection that has not sent a whole message."""
MAX_CONNECTIONS = 16
"""Launchers the running app talks to at once; a newer one replaces the oldest."""
RELISTEN_INTERVAL_MS = 1_000
"""How often the running app checks that it still listens."""


def encode_message(payload: dict[str, object]) -> bytes:
    """One protocol line."""
    return json.dumps({"version": PROTOCOL_VERSION, **payload}).encode("utf-8") + b"\n"


def decode_files(line: bytes) -> list[str] | None:
    """The files of a launcher's message, or ``None`` when it is not a valid message.

    Only a flat object whose ``files`` is a list of non-empty strings is
    accepted; deep nesting, bad UTF-8 and any other JSON error give ``None``.
    """
    message = _decode(line)
    if not isinstance(message, dict) or message.get("version") != PROTOCOL_VERSION:
        return None
    files = message.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        return None
    return files


def _decode(line: bytes) -> object:
    try:
        return json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):  # JSON and UTF-8 errors are ValueErrors
        return None


def hand_over(name: str | None, files: Iterable[str], timeout_ms: int = REPLY_TIMEOUT_MS) -> bool:
    """Give ``files`` to the app already listening on ``name``; True once it acknowledges.

    Relative paths are made absolute here, against this process's working
    folder. Nothing is sent to an app that runs as another user. Blocking, so
    it is meant for start-up, before any window exists.
    """
    if name is None:
        return False
    message = encode_message({"files": [os.path.abspath(f) for f in files]})
    socket = QLocalSocket()
    socket.connectToServer(name)
    if not socket.waitForConnected(CONNECT_TIMEOUT_MS):
        return False
    try:
        problem = foreign_peer(int(socket.socketDescriptor()))
        if problem is not None:
            log.warning("Not handing files to the app listening on %s: %s", name, problem)
            return False
        socket.write(message)
        if not socket.waitForBytesWritten(timeout_ms):
            return False
        reply = bytearray()
        while b"\n" not in reply and len(reply) < MAX_REPLY_BYTES:
            if not socket.bytesAvailable() and not socket.waitForReadyRead(timeout_ms):
                break
            reply += socket.read(MAX_REPLY_BYTES - len(reply)).data()
        answer = _decode(bytes(reply).split(b"\n", 1)[0])
        return isinstance(answer, dict) and answer.get("ok") is True
    finally:
        socket.abort()


class _Connection(QObject):
    """One launcher talking to the server: buffers its line, with a deadline."""

    received = Signal(list)
    finished = Signal(object)
    """Emitted with the connection once it is closed."""

    def __init__(self, socket: QLocalSocket, parent: QObject) -> None:
        super().__init__(parent)
        self.socket = socket
        self.buffer = bytearray()
        self.answered = False
        self.closed = False
        socket.setParent(self)
        socket.readyRead.connect(self._read)
        socket.disconnected.connect(self.close)
        self.timer = QTimer(self, singleShot=True, interval=CLIENT_TIMEOUT_MS)
        self.timer.timeout.connect(self.close)
        self.timer.start()

    def _read(self) -> None:
        if self.answered or self.closed:  # one message per connection
            return
        self.buffer += self.socket.readAll().data()
        end = self.buffer.find(b"\n")
        if end < 0:
            if len(self.buffer) > MAX_MESSAGE_BYTES:
                log.warning("Ignored an oversized message from another launch")
                self.close()
            return
        files = decode_files(bytes(self.buffer[:end])) if end <= MAX_MESSAGE_BYTES else None
        if files is None:
            log.warning("Ignored a malformed message from another launch")
            self.close()
            return
        self.answered = True
        self.socket.write(encode_message({"ok": True}))
        self.socket.flush()
        self.received.emit(files)
        self.socket.disconnectFromServer()

    def close(self) -> None:
        """Drop the connection and forget it."""
        if self.closed:
            return
        self.closed = True
        self.timer.stop()
        self.socket.abort()
        self.finished.emit(self)
        self.deleteLater()


class InstanceServer(QObject):
    """Listens for later launches and emits the files they hand over.

    ``files_received`` carries a list of absolute paths, possibly empty: an
    empty list still means "the user launched the app again, show the window".
    """

    files_received = Signal(list)

    def __init__(self, name: str | None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.server = QLocalServer(self)
        self.server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        self.server.newConnection.connect(self._accept)
        self.connections: list[_Connection] = []
        self.stopped_listening = False
        self.warned_busy = False
        self.watchdog = QTimer(self, interval=RELISTEN_INTERVAL_MS)
        self.watchdog.timeout.connect(self._keep_listening)

    def listen(self) -> bool:
        """Start listening, replacing a socket left behind by a crashed app.

        A socket another process still answers on is left alone. Call only
        after :func:`hand_over` found nobody answering on the name.
        """
        if self.name is None:
            return False
        if self._listen():
            log.info("Listening for other launches on %s", self.server.fullServerName())
            self.watchdog.start()
            return True
        reason = self.server.errorString() or "another process answers there"
        log.warning("Cannot listen for other launches on %s: %s", self.name, reason)
        return False

    def close(self) -> None:
        """Stop listening (and remove the socket file)."""
        self.watchdog.stop()
        self.server.close()

    def _listen(self) -> bool:
        """Listen on the name unless a live socket is there; a dead one is replaced."""
        if self.name is None:
            return False
        try:
            if socket_is_live(self.name):
                return False
        except OSError:  # no descriptor left to look with
            return False
        QLocalServer.removeServer(self.name)
        return self.server.listen(self.name)

    def _keep_listening(self) -> None:
        """Listen again after the system closed the server (accept failed, e.g. EMFILE)."""
        if self.server.isListening():
            return
        if not self.stopped_listening:
            self.stopped_listening = True
            log.warning("Stopped listening for other launches: %s", self.server.errorString())
        if self._listen():
            self.stopped_listening = False
            log.info("Listening for other launches again on %s", self.server.fullServerName())

    def _accept(self) -> None:
        while self.server.hasPendingConnections():
            socket = self.server.nextPendingConnection()
            if socket is None:
                break
            problem = foreign_peer(int(socket.socketDescriptor()))
            if problem is not None:
                log.warning("Dropped a connection to the single-instance socket: %s", problem)
                socket.abort()
                socket.deleteLater()
                continue
            if len(self.connections) >= MAX_CONNECTIONS:
                if not self.warned_busy:
                    self.warned_busy = True
                    log.warning(
                        "More than %d launches at once: dropping the oldest", MAX_CONNECTIONS
                    )
                self.connections[0].close()
            connection = _Connection(socket, self)
            connection.received.connect(self._on_received)
            connection.finished.connect(self._forget)
            self.connections.append(connection)

    def _forget(self, connection: _Connection) -> None:
        if connection in self.connections:
            self.connections.remove(connection)

    def _on_received(self, files: list[str]) -> None:
        log.info("Another launch handed over %d file(s)", len(files))
        self.files_received.emit(files)


class FileOpenEvents(QObject):
    """Files the system asks the running app to open (macOS Finder's "Open With").

    On macOS a file opened while the app runs arrives as a ``FileOpen`` event,
    not as a new launch. Install on the application with ``installEventFilter``.
    """

    files_received = Signal(list)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Emit ``files_received`` for a ``FileOpen`` event and consume it."""
        if event.type() == QEvent.Type.FileOpen and isinstance(event, QFileOpenEvent):
            path = event.file()
            if path:
                self.files_received.emit([path])
                return True
        return super().eventFilter(watched, event)


def claim_instance(paths: AppPaths, files: Iterable[str]) -> InstanceServer | None:
    """Hand ``files`` to a running app, or become the running app.

    Returns ``None`` when a running app took the files (this launch should
    exit), else a listening :class:`InstanceServer` (or one that could not
    listen, in which case the app simply runs on its own).
    """
    name = server_name(paths)
    if hand_over(name, files):
        return None
    server = InstanceServer(name)
    server.listen()
    return server
