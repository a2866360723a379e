"""The TGI-emulator test image: a Debian root filesystem with python3 whose entrypoint is named and
chained like TGI's (``/tgi-entrypoint.sh`` → ``text-generation-launcher`` → the emulator), so the
launcher starts it exactly as it starts a real TGI container.

No registry is needed. Two images are built:

* ``functionary-tgi-emulator-base:bookworm-<hash>``: ``.deb`` files fetched with ``apt-get download``
  (the mirror comes from this machine's apt sources), unpacked with ``dpkg -x`` and ``docker import``-ed.
  Slow (a minute or two), built once.
* ``functionary-tgi-emulator:<hash>``: the base plus a copy of the package ``tgi/emulator/`` (run as
  ``python3 -m emulator``, stdlib only); the tag and the
  ``functionary.emulator-sha256`` label follow the emulator's content and this recipe, so a changed
  emulator gives a new image in seconds and an unchanged one is reused.

``python -m tgi.docker_image --ensure`` builds what is missing and prints the tag; it is idempotent and
answers in well under a second when the image exists.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path

import docker
import docker.errors

IMAGE_REPO = "functionary-tgi-emulator"
BASE_REPO = "functionary-tgi-emulator-base"
TEST_LABEL = "functionary.test"  # every image and container the test suite creates carries it
EMULATOR_HASH_LABEL = "functionary.emulator-sha256"
DEFAULT_EMULATOR = Path(__file__).with_name("emulator")  # the package directory

# What python3 needs to run a standard-library server, plus dash for the entrypoint scripts.
ROOT_PACKAGES = ("python3-minimal", "libpython3.11-stdlib", "dash")
# Reached only through maintainer scripts or optional alternatives, which a container never runs.
SKIPPED_PACKAGES = frozenset(
    {"dpkg", "perl", "perl-base", "debconf", "install-info", "tar", "mailcap", "mime-support"}
)

_ENTRYPOINT = (
    "#!/bin/sh\n"
    "# Same chain as TGI's image: the entrypoint execs the launcher with all arguments.\n"
    'exec text-generation-launcher "$@"\n'
)
_LAUNCHER = '#!/bin/sh\nPYTHONPATH=/opt/tgi-emulator exec python3 -m emulator "$@"\n'
# STOPSIGNAL SIGINT: the emulator runs as PID 1, where an unhandled SIGTERM is ignored; real TGI
# handles SIGTERM itself, so `docker stop` must be just as prompt here.
_DOCKERFILE = """\
FROM {base}
COPY emulator /opt/tgi-emulator/emulator
COPY text-generation-launcher /usr/local/bin/text-generation-launcher
COPY tgi-entrypoint.sh /tgi-entrypoint.sh
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HF_HOME=/data PORT=80 PYTHONUNBUFFERED=1
LABEL {test_label}=1 {hash_label}={emulator_sha}
STOPSIGNAL SIGINT
ENTRYPOINT ["/tgi-entrypoint.sh"]
"""

Log = Callable[[str], None]


class ImageBuildError(RuntimeError):
    """The emulator image could not be built (apt, dpkg or the Docker engine failed)."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _package_files(package: Path) -> list[tuple[str, bytes]]:
    """The emulator package's modules as ``(name, content)``, sorted (no caches)."""
    return [(path.name, path.read_bytes()) for path in sorted(package.glob("*.py"))]


def _package_digest_input(package: Path) -> bytes:
    return b"".join(name.encode() + b"\0" + _sha256(data).encode() + b"\n" for name, data in _package_files(package))


def base_tag() -> str:
    recipe = repr((ROOT_PACKAGES, sorted(SKIPPED_PACKAGES))).encode()
    return f"{BASE_REPO}:bookworm-{_sha256(recipe)[:12]}"


def image_tag(emulator: Path = DEFAULT_EMULATOR) -> str:
    """Tag of the image for this emulator: changes whenever the emulator or the recipe changes."""
    recipe = (_DOCKERFILE + _ENTRYPOINT + _LAUNCHER + base_tag()).encode()
    return f"{IMAGE_REPO}:{_sha256(_package_digest_input(emulator) + recipe)[:16]}"


def ensure_image(
    *, emulator: Path = DEFAULT_EMULATOR, client: docker.DockerClient | None = None, log: Log = print
) -> str:
    """Return the tag of an image running ``emulator``, building what is missing (once per content)."""
    emulator = Path(emulator)
    if not (emulator / "__main__.py").is_file():
        raise ImageBuildError(f"emulator not found: {emulator}")
    client = client or docker.from_env()
    tag = image_tag(emulator)
    if _has_image(client, tag):
        return tag
    # Several checkouts may share one engine: build under a lock so they do not race.
    with _build_lock():
        if _has_image(client, tag):
            return tag
        base = base_tag()
        if not _has_image(client, base):
            _build_base(client, base, log=log)
        _build_top(client, base, emulator, tag, log=log)
        _remove_stale_tops(client, keep=tag, log=log)
    return tag


def _has_image(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


class _build_lock:
    def __enter__(self) -> None:
        path = Path(tempfile.gettempdir()) / "functionary-tgi-emulator-image.lock"
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


# --- base image: Debian packages → root filesystem → docker import ----------------------------------


def _build_base(client: docker.DockerClient, tag: str, *, log: Log) -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tgi-emulator-base-") as tmp:
        work = Path(tmp)
        packages = resolve_packages(ROOT_PACKAGES, skip=SKIPPED_PACKAGES)
        log(f"[image] downloading {len(packages)} Debian packages: {' '.join(packages)}")
        debs = work / "debs"
        debs.mkdir()
        _run(["apt-get", "download", "-q", *packages], cwd=debs)
        rootfs = work / "rootfs"
        rootfs.mkdir()
        for deb in sorted(debs.glob("*.deb")):
            _run(["dpkg-deb", "-x", str(deb), str(rootfs)])
        _finish_rootfs(rootfs)
        archive = work / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(rootfs, arcname=".", filter=_as_root)
        log(f"[image] importing {archive.stat().st_size / 1e6:.0f} MB root filesystem as {tag}")
        repository, _, version = tag.partition(":")
        client.api.import_image_from_file(
            str(archive), repository=repository, tag=version, changes=[f"LABEL {TEST_LABEL}=1"]
        )
    log(f"[image] base image {tag} built in {time.monotonic() - started:.0f} s")


def resolve_packages(roots: Iterable[str], *, skip: frozenset[str] = frozenset()) -> list[str]:
    """Dependency closure of ``roots`` (Depends and Pre-Depends, first real alternative), without ``skip``."""
    roots = list(roots)
    graph = _dependency_graph(roots)
    if any(root not in graph for root in roots):
        # No package lists yet on this machine: fetch them once, then retry.
        _run(["apt-get", "update", "-q"])
        graph = _dependency_graph(roots)
    missing = [root for root in roots if root not in graph]
    if missing:
        raise ImageBuildError(f"apt knows no package {', '.join(missing)}")
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name in skip:
            continue
        seen.add(name)
        for group in graph.get(name, []):
            choice = next((alt for alt in group if alt in graph and alt not in skip), None)
            if choice is not None:
                todo.append(choice)
    return sorted(seen)


def _dependency_graph(roots: list[str]) -> dict[str, list[list[str]]]:
    """Parse ``apt-cache depends --recurse``: package → its dependency groups (each a list of alternatives)."""
    if shutil.which("apt-cache") is None:
        raise ImageBuildError("apt-cache not found: the emulator image is built from Debian packages (apt)")
    # Exit status 100 only means that some root is unknown: the caller checks the roots itself.
    out = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
         "--no-breaks", "--no-replaces", "--no-enhances", *roots],
        capture_output=True, text=True,
    ).stdout
    graph: dict[str, list[list[str]]] = {}
    current: list[list[str]] | None = None
    open_group: list[str] | None = None
    for line in out.splitlines():
        if not line.startswith(" "):
            name = line.strip()
            if name.startswith("<"):  # virtual package: its providers follow, indented deeper
                current = None
                continue
            current = graph.setdefault(name, [])
            open_group = None
            continue
        if current is None:
            continue
        stripped = line.strip()
        alternative = stripped.startswith("|")
        kind, _, dep = stripped.lstrip("|").partition(":")
        if kind not in ("Depends", "PreDepends"):
            continue
        dep = dep.strip()
        if open_group is None:
            open_group = []
            current.append(open_group)
        if not dep.startswith("<"):
            open_group.append(dep)
        if not alternative:  # the last member of an OR group has no leading '|'
            open_group = None
    return graph


def _finish_rootfs(rootfs: Path) -> None:
    """What dpkg's maintainer scripts would have done, as far as a python3 container needs it."""
    (rootfs / "tmp").mkdir(mode=0o1777, exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)
    for name in ("data", "proc", "sys", "dev", "etc", "root", "usr/local/bin"):
        (rootfs / name).mkdir(parents=True, exist_ok=True)
    (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (rootfs / "etc/group").write_text("root:x:0:\n")
    python3 = rootfs / "usr/bin/python3"
    if not python3.exists():
        python3.symlink_to("python3.11")
    sh = rootfs / "bin/sh"
    if not sh.exists():
        sh.symlink_to("dash")
    if shutil.which("ldconfig"):
        # A linker cache is optional (Debian's loader searches the multiarch dirs), but it is cheap.
        subprocess.run(["ldconfig", "-r", str(rootfs)], capture_output=True)


def _as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _run(cmd: list[str], *, cwd: Path | None = None) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise ImageBuildError(f"{cmd[0]} not found: the emulator image is built from Debian packages (apt)") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise ImageBuildError(f"{' '.join(cmd[:3])} ... failed with exit code {proc.returncode}:\n{tail}")


# --- top image: base + emulator + TGI-named entrypoint ------------------------------------------------


def _build_top(client: docker.DockerClient, base: str, emulator: Path, tag: str, *, log: Log) -> None:
    dockerfile = _DOCKERFILE.format(
        base=base, test_label=TEST_LABEL, hash_label=EMULATOR_HASH_LABEL,
        emulator_sha=_sha256(_package_digest_input(emulator)),
    )
    files = [(f"emulator/{name}", data, 0o644) for name, data in _package_files(emulator)]
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        folder = tarfile.TarInfo("emulator")
        folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, 0
        tar.addfile(folder)
        for name, data, mode in (
            ("Dockerfile", dockerfile.encode(), 0o644),
            *files,
            ("text-generation-launcher", _LAUNCHER.encode(), 0o755),
            ("tgi-entrypoint.sh", _ENTRYPOINT.encode(), 0o755),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    try:
        client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True, forcerm=True, pull=False)
    except docker.errors.BuildError as exc:
        lines = [str(chunk.get("stream") or chunk.get("error") or "").rstrip() for chunk in exc.build_log]
        raise ImageBuildError(f"building {tag} failed: {exc}\n" + "\n".join(lines[-20:])) from exc
    log(f"[image] built {tag} from {emulator}")


def _remove_stale_tops(client: docker.DockerClient, *, keep: str, log: Log) -> None:
    """Drop emulator images older than a day: younger ones may belong to another checkout sharing the engine."""
    for image in client.images.list(name=IMAGE_REPO):
        created = datetime.fromisoformat(image.attrs["Created"][:19]).replace(tzinfo=timezone.utc)
        if keep in image.tags or time.time() - created.timestamp() < 86400:
            continue
        for old in image.tags:
            try:
                client.images.remove(old)
                log(f"[image] removed stale {old}")
            except docker.errors.APIError:
                pass  # still used by a container somewhere: leave it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tgi.docker_image", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ensure", action="store_true", help="build the image if it is missing (idempotent)")
    parser.add_argument("--emulator", type=Path, default=DEFAULT_EMULATOR, help="emulator to bake in")
    parser.add_argument("--print-tag", action="store_true", help="only print the tag this emulator would get")
    args = parser.parse_args(argv)
    if args.print_tag:
        print(image_tag(args.emulator))
        return 0
    if not args.ensure:
        parser.print_help()
        return 2
    try:
        tag = ensure_image(emulator=args.emulator, log=lambda line: print(line, file=sys.stderr, flush=True))
    except (ImageBuildError, docker.errors.DockerException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
