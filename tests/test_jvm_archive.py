"""The driver JVM's class-data-sharing archive: recorded once (in the foreground), checked,
mapped, never fatal, and never a reason to touch a file jampi did not make."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from jampi_dsl import jvm_archive
from jampi_dsl.session import _jvm_exited, _without_archive

JAVA = shutil.which("java")
JAVA_OR_NAME = JAVA or "java"  # the archive's name is keyed on it; these tests need no JVM
needs_java = pytest.mark.skipif(JAVA is None, reason="no java on PATH")


def _record_tiny_archive(path: str) -> subprocess.Popen:
    """A real dynamic archive in a second: a JVM that prints its version and dumps at exit."""
    proc = subprocess.Popen([JAVA, f"-XX:ArchiveClassesAtExit={path}", "-Xlog:cds=off", "-Xlog:cds+dynamic=off",
                             "-cp", ".", "-version"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.wait(timeout=60)
    return proc


@needs_java
def test_a_recording_is_kept_only_when_a_jvm_can_map_it(tmp_path):
    archive = jvm_archive.Archive(JAVA_OR_NAME, str(tmp_path))
    assert archive.java_options().startswith(f"-XX:ArchiveClassesAtExit={archive.recording} ")
    assert open(archive.lock).read() == str(os.getpid())
    _record_tiny_archive(archive.recording)
    assert os.path.getsize(archive.recording) > 0
    recording = archive.recording
    assert archive.keep_recording(JAVA, ".")
    assert os.path.exists(archive.path) and not os.path.exists(archive.lock)
    assert not os.path.exists(recording) and archive.recording is None
    # Now every start maps it, quietly (CDS messages would land in a program's stdout); a JVM
    # that crashes on it writes its crash log into jampi's folder, under a name of jampi's.
    crash_logs = os.path.join(str(tmp_path), "hs_err_jampi_%p.log")
    assert jvm_archive.Archive(JAVA_OR_NAME, str(tmp_path)).java_options() == (
        f"-XX:SharedArchiveFile={archive.path} -Xlog:cds=off -Xlog:cds+dynamic=off -XX:ErrorFile={crash_logs}"
    )
    # ... unless the user says where crash logs go.
    assert "ErrorFile" not in jvm_archive.Archive(JAVA_OR_NAME, str(tmp_path)).java_options("-XX:ErrorFile=/x/%p")

    # A cut-short recording (the JVM killed while dumping) would crash every JVM mapping it.
    cut = tmp_path / "cut"
    cut.mkdir()
    other = jvm_archive.Archive(JAVA_OR_NAME, str(cut))
    assert other.java_options().startswith("-XX:ArchiveClassesAtExit=")
    with open(archive.path, "rb") as src, open(other.recording, "wb") as dst:
        dst.write(src.read()[: os.path.getsize(archive.path) // 2])
    crashed = subprocess.run([JAVA, f"-XX:SharedArchiveFile={other.recording}", "-XX:ErrorFile=/dev/null", "-cp",
                              ".", "-version"], capture_output=True, cwd=tmp_path)
    assert crashed.returncode != 0
    assert not other.keep_recording(JAVA, ".")
    assert os.listdir(cut) == []  # neither the archive, the recording, the lock nor the check's crash log
    assert not [name for name in os.listdir(tmp_path) if name.startswith("hs_err")]


def test_discard_removes_only_what_jampi_made(tmp_path, monkeypatch):
    """A damaged archive goes with the crash logs its JVMs wrote into jampi's folder, and with
    nothing else: not the user's hs_err files, not an older crash log, not another archive's."""
    folder = tmp_path / "jvm"
    work = tmp_path / "work"
    folder.mkdir()
    work.mkdir()
    monkeypatch.chdir(work)
    archive = jvm_archive.Archive(JAVA_OR_NAME, str(folder))
    open(archive.path, "w").close()
    names_it = f"jvm_args: -XX:SharedArchiveFile={archive.path}\n"
    users = work / "hs_err_pid123.log"
    users.write_text(names_it)  # the user's JVM, mapping the same archive: not jampi's to remove
    ours = folder / "hs_err_jampi_4242.log"
    ours.write_text(names_it)
    older = folder / "hs_err_jampi_4141.log"
    older.write_text(names_it)
    os.utime(older, (time.time() - 3600, time.time() - 3600))
    unrelated = folder / "hs_err_jampi_4343.log"
    unrelated.write_text("jvm_args: -Xmx1g\n")
    archive.discard(since=time.time() - 60)
    assert not os.path.exists(archive.path) and not ours.exists()
    assert users.read_text() == names_it and older.exists() and unrelated.exists()


def test_one_recorder_at_a_time_and_a_dead_ones_lock_is_taken_over(tmp_path):
    first = jvm_archive.Archive(JAVA_OR_NAME, str(tmp_path))
    with open(first.lock, "w") as fh:
        fh.write(str(os.getppid()))  # a live process records: the others start without recording
    second = jvm_archive.Archive(JAVA_OR_NAME, str(tmp_path))
    assert second.java_options() == "" and second.recording is None

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(first.lock, "w") as fh:
        fh.write(str(dead.pid))
    leftover = f"{first.path}.12345.tmp"  # named after the process that started the dead recording
    open(leftover, "w").close()
    third = jvm_archive.Archive(JAVA_OR_NAME, str(tmp_path))
    assert third.java_options().startswith("-XX:ArchiveClassesAtExit=")
    assert open(third.lock).read() == str(os.getpid()) and not os.path.exists(leftover)
    third.abandon_recording()
    open(third.lock, "w").close()  # created an instant ago, its pid not yet written: still taken
    assert jvm_archive.Archive(JAVA_OR_NAME, str(tmp_path)).java_options() == ""
    os.utime(third.lock, (time.time() - 60, time.time() - 60))
    fourth = jvm_archive.Archive(JAVA_OR_NAME, str(tmp_path))
    assert fourth.java_options().startswith("-XX:ArchiveClassesAtExit=")
    fourth.abandon_recording()
    assert not os.path.exists(fourth.lock)


def test_switches_and_the_users_own_options(tmp_path, monkeypatch):
    monkeypatch.setenv("JAMPI_CACHE_DIR", str(tmp_path))
    assert jvm_archive.cache_dir() == str(tmp_path / "jvm")
    for off in ("0", "off", "false"):
        monkeypatch.setenv("JAMPI_JVM_ARCHIVE", off)
        assert not jvm_archive.enabled()
    monkeypatch.delenv("JAMPI_JVM_ARCHIVE")
    assert jvm_archive.enabled()
    assert jvm_archive.user_has_cds("-Xmx2g -XX:SharedArchiveFile=/x.jsa")
    assert not jvm_archive.user_has_cds("-Dlog4j2.configurationFile=file:/tmp/l.properties")
    options = "-Dlog4j2.configurationFile=file:/l -XX:SharedArchiveFile=/c/a.jsa -Xlog:cds=off -Xlog:cds+dynamic=off"
    added = "-XX:SharedArchiveFile=/c/a.jsa -Xlog:cds=off -Xlog:cds+dynamic=off"
    assert _without_archive(options, added) == "-Dlog4j2.configurationFile=file:/l"
    mine = "-Xlog:cds=info -Dx=1"  # a user's own CDS logging is theirs to keep
    assert _without_archive(f"{mine} {added}", added) == mine
    # Only a JVM that died on the way up is retried without the archive; a later error is not its fault.
    from pyspark.errors import PySparkRuntimeError

    assert _jvm_exited(PySparkRuntimeError(errorClass="JAVA_GATEWAY_EXITED", messageParameters={}))
    assert not _jvm_exited(ValueError("Could not parse Master URL: 'bogus'"))


_START = """
import os, sys
from jampi_dsl.session import get_spark
spark = get_spark()
assert spark.sparkContext.parallelize(range(8), 4).sum() == 28
from pyspark import SparkContext
maps = open(f"/proc/{SparkContext._gateway.proc.pid}/maps").read()
print("MAPPED" if os.environ["JAMPI_CACHE_DIR"] in maps else "NOT MAPPED", flush=True)  # not the JDK's own
"""


@needs_java
def test_spark_records_maps_and_survives_a_damaged_archive(tmp_path):
    """The whole path on real Spark: the first start records, the next maps the archive, and a
    damaged archive (which crashes the JVM) is dropped and Spark starts without it."""
    env = {**os.environ, "JAMPI_CACHE_DIR": str(tmp_path), "JAMPI_JVM_ARCHIVE": "1"}
    env.pop("PYSPARK_GATEWAY_PORT", None)

    def start() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", _START], env=env, capture_output=True, text=True,
                              timeout=240, cwd=tmp_path)

    first = start()
    assert first.returncode == 0, first.stderr[-2000:]
    assert "NOT MAPPED" in first.stdout and "cds" not in first.stdout
    assert "saving the JVM's class archive" in first.stderr  # the one line saying why the exit waits
    folder = tmp_path / "jvm"
    kept = list(folder.glob("*.jsa"))  # kept before the process exited: no watcher after it
    assert len(kept) == 1 and not list(folder.glob("*.recording")) and not list(folder.glob("*.tmp"))

    second = start()
    assert second.returncode == 0, second.stderr[-2000:]
    assert "MAPPED" in second.stdout and "NOT" not in second.stdout

    with open(kept[0], "r+b") as fh:
        fh.truncate(os.path.getsize(kept[0]) // 2)
    # A crash log of the user's own, naming the archive: jampi did not write it, so it stays.
    users = tmp_path / "hs_err_pid123.log"
    users.write_text(f"jvm_args: -XX:SharedArchiveFile={kept[0]}\n")
    third = start()
    assert third.returncode == 0, third.stderr[-2000:]
    assert "started without it" in third.stderr and "NOT MAPPED" in third.stdout
    assert not kept[0].exists()
    assert users.exists()
    assert [name for name in os.listdir(tmp_path) if name.startswith("hs_err")] == [users.name]
    assert not list(folder.glob("hs_err*"))  # the crashed JVM's own log (in jampi's folder) went too
