"""Colab: carry notebook 04's model over to notebook 05.

Each notebook opened from its "Open in Colab" badge gets a runtime of its own, and a runtime's
files are gone when it ends: notebook 05 never sees the `runs/` folder notebook 04 wrote. What
outlives a runtime is the learner's Google Drive, mounted with `google.colab.drive.mount`
(which asks the learner to authorise it). So, with the learner's consent, notebook 04 copies
its best checkpoint to a folder on Drive, and notebook 05 looks there as well as in `runs/`.
Without a checkpoint, notebook 05 uses the model shipped in the package (tinygpt.pretrained).

Away from Colab nothing here mounts anything: `runs_dir` is the local folder, and the two
notebooks share `runs/` as they always did. Colab detection follows Colab's own convention:
its kernel imports `google.colab` at start (https://colab.research.google.com/notebooks/io.ipynb).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from .. import checkpoint, files

DRIVE_MOUNT = Path("/content/drive")  # where Colab's examples mount Drive
DRIVE_FOLDER = Path("MyDrive") / "tinygpt" / "runs"  # the course's folder inside the learner's Drive
CHECKPOINT = "ckpt_best.pt"


def on_colab() -> bool:
    """True inside a Colab runtime (its kernel has imported `google.colab`)."""
    return "google.colab" in sys.modules


def runs_dir(consent: bool = False, *, local="runs", mount_point=DRIVE_MOUNT) -> Path:
    """The folder that holds the course's runs and outlives this runtime, if there is one.

    On Colab with `consent=True`: mounts Google Drive at `mount_point` (Colab asks the learner to
    authorise it) and returns `mount_point/MyDrive/tinygpt/runs`, created if missing. Anywhere
    else, or without consent, returns `local` unchanged: nothing is mounted. If the mount fails
    (the learner declined, or Drive is unreachable) it warns (UserWarning, saying why) and returns
    `local`, so the notebook goes on with a model that lives only as long as this runtime.
    """
    if not (consent and on_colab()):
        return Path(local)
    from google.colab import drive

    try:
        drive.mount(str(mount_point))
    except Exception as err:  # Colab raises several kinds (declined, timed out, no credentials)
        warnings.warn(f"Google Drive was not mounted ({err}); runs stay in {local}/, which this "
                      "runtime forgets when it ends", stacklevel=2)
        return Path(local)
    folder = Path(mount_point) / DRIVE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def keep_checkpoint(ckpt, dest_dir) -> Path:
    """Copy the checkpoint `ckpt` to `dest_dir/<same name>` and return the copy's path.

    The file is read (and so checked) with `checkpoint.read` and copied with the same atomic write
    as training uses, so a runtime that dies half-way leaves the previous copy whole. Copying a file
    onto itself does nothing. Raises FileNotFoundError if `ckpt` does not exist, CheckpointError if
    it is not a sound checkpoint.
    """
    src, dest_dir = Path(ckpt), Path(dest_dir)
    if not src.is_file():
        raise FileNotFoundError(f"no checkpoint to keep at {src}")
    dest = dest_dir / src.name
    if dest.exists() and dest.samefile(src):
        return dest
    checkpoint.read(src)  # refuses a file that is not a sound checkpoint
    return files.atomic_copy(src, dest)


def find_checkpoint(*run_dirs, name: str = CHECKPOINT) -> Path | None:
    """The first `run_dir/name` that exists, in the order given (None if there is none).

    Notebook 05 passes the Drive folder first, then the local one: on Colab the local folder
    is empty in a fresh runtime; locally both are the same folder.
    """
    for d in run_dirs:
        path = Path(d) / name
        if path.is_file():
            return path
    return None
