"""`witness-record VIDEO --server URL`: play a video file as if a phone were
recording it live, one encrypted chunk every `--chunk-seconds`, uploading
while "recording". `--stop-after SECONDS` acts out a phone knocked away: the
program stops dead at that moment, no final chunk, no goodbye.

Progress goes to stderr; the recording id is printed alone on stdout.
"""

from __future__ import annotations

import argparse
import math
import mimetypes
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..timefmt import format_time, utc_now
from .device import DeviceClient, ServerUnreachable, UploadRefused


def probe_duration(path: Path) -> float:
    """The video's duration in seconds, from ffprobe. Raises `RuntimeError`
    when ffprobe is missing or cannot tell."""
    if shutil.which("ffprobe") is None:
        raise RuntimeError("ffprobe is not installed; pass --duration SECONDS")
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=False).stdout.strip()
    try:
        duration = float(out)
    except ValueError:
        raise RuntimeError(f"ffprobe could not read the duration of {path}; pass --duration SECONDS") from None
    if not math.isfinite(duration) or duration <= 0:
        raise RuntimeError(f"ffprobe could not read the duration of {path}; pass --duration SECONDS")
    return duration


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="witness-record", description=__doc__.split("\n\n")[0])
    parser.add_argument("video", type=Path, help="the video file to play as a live recording")
    parser.add_argument("--server", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--chunk-seconds", type=float, default=1.0, help="seconds of recording per chunk (1)")
    parser.add_argument("--stop-after", type=float, default=None,
                        help="stop dead after this many seconds, as a phone knocked away would")
    parser.add_argument("--duration", type=float, default=None, help="video duration (default: from ffprobe)")
    parser.add_argument("--content-type", default=None, help="media type (default: from the file name)")
    parser.add_argument("--outbox", type=Path, default=Path("witness-outbox"),
                        help="the phone's outbox folder: device credentials and unsent chunks (./witness-outbox)")
    parser.add_argument("--enrollment-code", default=None, help="enrollment code, if the server needs one")
    parser.add_argument("--sign", action="store_true", help="register a device key and sign every chunk")
    parser.add_argument("--drain-timeout", type=float, default=300.0,
                        help="after a normal stop, how long to keep trying to upload what is left (300)")
    args = parser.parse_args(argv)
    if args.chunk_seconds <= 0 or (args.stop_after is not None and args.stop_after <= 0):
        parser.error("--chunk-seconds and --stop-after must be positive")
    return args


class Progress:
    """One status line on stderr: redrawn in a terminal, a line per change elsewhere."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.last = ""

    def show(self, text: str) -> None:
        if text == self.last:
            return
        self.last = text
        if self.tty:
            self.stream.write("\r\033[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.video.is_file():
        print(f"witness-record: no such file: {args.video}", file=sys.stderr)
        return 2
    try:
        duration = args.duration or probe_duration(args.video)
    except RuntimeError as exc:
        print(f"witness-record: {exc}", file=sys.stderr)
        return 2
    content_type = args.content_type or mimetypes.guess_type(args.video.name)[0] or "video/mp4"
    size = args.video.stat().st_size
    pieces = max(1, math.ceil(duration / args.chunk_seconds))
    piece_bytes = math.ceil(size / pieces)

    client = DeviceClient(args.server, args.outbox)
    try:
        client.register(enrollment_code=args.enrollment_code, sign_chunks=args.sign,
                        deadline=time.monotonic() + 60)
        client.server_keys(deadline=time.monotonic() + 60)
    except (ServerUnreachable, UploadRefused) as exc:
        print(f"witness-record: cannot reach the server to register: {exc}", file=sys.stderr)
        return 1
    recording_id = client.start_recording(content_type, started_at=format_time(utc_now()))
    print(recording_id, flush=True)
    progress = Progress()
    stop = threading.Event()
    failure: list[BaseException] = []
    finished_recording = threading.Event()

    def upload_loop():
        while not stop.is_set():
            try:
                client.upload_pending(recording_id, deadline=time.monotonic() + 5)
            except ServerUnreachable:
                pass  # offline: the outbox keeps everything; try again
            except UploadRefused as exc:
                failure.append(exc)
                stop.set()
                return
            if finished_recording.is_set() and not client.pending_indexes(recording_id):
                return
            client.wait_for_pieces(0.5)

    uploader = threading.Thread(target=upload_loop, name="uploader", daemon=True)
    uploader.start()
    started = time.monotonic()
    knocked_away = False
    with open(args.video, "rb") as video:
        for index in range(pieces):
            due = started + (index + 1) * args.chunk_seconds
            if args.stop_after is not None and (index + 1) * args.chunk_seconds > args.stop_after:
                knocked_away = True
                break
            while (now := time.monotonic()) < due and not stop.is_set():
                _report(progress, client, recording_id, now - started, index)
                time.sleep(min(0.2, due - now))
            if stop.is_set():
                break
            captured = format_time(utc_now())
            client.add_piece(recording_id, video.read(piece_bytes), final=index == pieces - 1, captured_at=captured)
            _report(progress, client, recording_id, time.monotonic() - started, index + 1)
    if knocked_away:
        while time.monotonic() < started + args.stop_after:
            time.sleep(0.05)
        safe = len(client.acked.get(recording_id, ()))
        left = len(client.pending_indexes(recording_id))
        progress.done(f"phone knocked away after {args.stop_after:g} s: {safe} chunks safe on the server, "
                      f"{left} never left the phone; the server will finalize it as interrupted")
        os._exit(0)  # the phone is gone: no cleanup, no goodbye
    finished_recording.set()
    uploader.join(timeout=args.drain_timeout)
    stop.set()
    if failure:
        progress.done(f"witness-record: the server refused a chunk: {failure[0]}")
        return 1
    left = client.pending_indexes(recording_id)
    if left:
        progress.done(f"{len(left)} chunks are still in the outbox {args.outbox}; run again later to send them")
        return 1
    progress.done(f"all {pieces} chunks safe on the server; recording {recording_id} is complete")
    receipts = client.receipts(recording_id)
    if receipts:
        progress.done(f"{len(receipts)} signed receipts of what the server acknowledged are in "
                      f"{client.receipts_file(recording_id)}: keep that file, or give it to your own lawyer")
    return 0


def _report(progress: Progress, client: DeviceClient, recording_id: str, elapsed: float, recorded: int) -> None:
    safe = len(client.acked.get(recording_id, ()))
    progress.show(f"[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] recorded {recorded} chunks, "
                  f"safe on the server: {safe}")


if __name__ == "__main__":
    sys.exit(main())
