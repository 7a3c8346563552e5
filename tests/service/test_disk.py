from pathlib import Path

from service.disk import full_disks, written_folders
from service.settings import Settings


def test_the_folders_the_service_writes_to_are_named_not_shown(tmp_path: Path):
    sqlite = Settings(database_url=f"sqlite:///{tmp_path / 'db' / 'wdgrid.db'}", tune_dir=tmp_path / "tune")
    folders = written_folders(sqlite, tmp_path / "logs")
    assert folders == {"store": tmp_path / "db", "logs": tmp_path / "logs", "checkpoints": tmp_path / "tune"}
    server = Settings(database_url="postgresql+psycopg://u@db.internal/wdgrid")
    assert "store" not in written_folders(server, tmp_path)  # a database server's disk is its own


def test_a_disk_with_less_room_than_asked_is_full(tmp_path: Path):
    folders = {"logs": tmp_path / "not" / "made" / "yet", "store": tmp_path}  # judged by the nearest existing parent
    assert full_disks(folders, 0) == []
    full = full_disks(folders, 2.0**40)  # 2^40 MiB, an exbibyte: no disk here has it
    assert [line.split(":")[0] for line in full] == ["logs", "store"]
    assert all(line.endswith(" MiB free") and str(tmp_path) not in line for line in full)
