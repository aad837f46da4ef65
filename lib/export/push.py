"""``python -m lib push RECIPE --repo OWNER/NAME [--dry-run]``: upload the export folder (the GGUF files and their
model card) to a Hugging Face model repository.

Usage: ``files = upload_plan(folder)``; ``push_folder(folder, repo_id, token)``; CLI: ``add_arguments``, ``run``.

The token comes from the environment only (``HF_TOKEN``): never from a file this project writes or from
`huggingface_hub`'s own login cache, so a shared machine never uploads under someone else's name by accident.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled

from lib.paths import gguf_dir, run_dir
from lib.recipe import ParamsError, load_recipe

SETUP_ERROR, UPLOAD_FAILED = 2, 1
UPLOADED = ("*.gguf", "*.Modelfile", "README.md")  # what a user downloads; nothing half-written (.partial files)


class PushError(Exception):
    """Why nothing was uploaded: one line for the user, and the exit status (2: fix the command or the folder,
    1: the hub could not be reached or refused)."""

    def __init__(self, message: str, status: int = SETUP_ERROR):
        super().__init__(message)
        self.status = status


def exported_names(run_dir: Path) -> set[str]:
    """The files 04's last run wrote (its manifest) and their Modelfiles: a quant an earlier `quant_types` left in
    the folder is not among them."""
    manifest = run_dir / "04_merge_export" / "manifest.json"
    if not manifest.is_file():
        raise PushError(f"{manifest} not found: export first (python -m lib run RECIPE --stages 04)")
    names = {Path(path).name for path in json.loads(manifest.read_text())["produced"].values()}
    return names | {str(Path(name).with_suffix(".Modelfile")) for name in names if name.endswith(".gguf")}


def upload_plan(folder: Path, names: set[str] | None = None) -> tuple[list[dict], list[str]]:
    """(the files `push_folder` uploads with their sizes, the files of the folder left out because 04's last run
    did not write them); `names`: those 04 wrote (None: every file of the folder). PushError when the folder has no
    GGUF or no card: 04 has not finished there."""
    if not folder.is_dir():
        raise PushError(f"{folder} does not exist: export first (python -m lib run RECIPE --stages 04)")
    found = sorted({p for pattern in UPLOADED for p in folder.glob(pattern) if p.is_file()})
    files = [p for p in found if names is None or p.name in names]
    if not any(p.suffix == ".gguf" for p in files):
        raise PushError(f"{folder} holds no .gguf file: export first (python -m lib run RECIPE --stages 04)")
    if not (folder / "README.md").is_file():
        raise PushError(f"{folder} has no model card (README.md): run 04 again, which writes it")
    return [{"path": p.name, "bytes": p.stat().st_size} for p in files], [p.name for p in found if p not in files]


def push_folder(folder: Path, repo_id: str, token: str, files: list[dict], private: bool = False,
                message: str = "") -> str:
    """Create the repository if needed and upload `files` (`upload_plan`'s) in one commit; the commit's URL.
    PushError with the reason when the hub cannot be reached or refuses, or --private meets a public repository."""
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if private and not api.repo_info(repo_id, repo_type="model").private:
            raise PushError(f"{repo_id} exists and is public: --private does not change that; make it private on "
                            "the hub first or push to another repository")
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, allow_patterns=[f["path"] for f in files],
                                   repo_type="model", commit_message=message or f"thinkdistill export of {folder}")
    except OfflineModeIsEnabled:
        raise PushError("HF_HUB_OFFLINE=1 is set: unset it to upload") from None
    except HFValidationError as error:
        raise PushError(f"--repo {repo_id}: {error}") from None
    except HfHubHTTPError as error:
        raise PushError(f"the hub refused the upload to {repo_id}: {str(error).splitlines()[0]}",
                        UPLOAD_FAILED) from None
    except Exception as error:  # no network, DNS, refused connection, TLS: httpx's transport errors
        if not isinstance(error, OSError) and not type(error).__module__.startswith(("httpx", "httpcore")):
            raise
        raise PushError(f"cannot reach {api.endpoint} ({type(error).__name__}: {error}): check the network or "
                        "HF_ENDPOINT", UPLOAD_FAILED) from None
    return commit.commit_url


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", default="", help="upload runs/RECIPE/04_merge_export/gguf/")
    parser.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the hub model repository (created if "
                                                                            "missing)")
    parser.add_argument("--folder", type=Path, help="upload this folder instead of the recipe's export")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded; needs no token")


def run(args: argparse.Namespace) -> int:
    try:
        if not args.folder and not args.recipe:
            raise PushError("name a recipe (python -m lib recipes lists them) or a folder with --folder DIR")
        run = None if args.folder else run_dir(load_recipe(args.recipe).name)
        folder = args.folder or gguf_dir(run)
        files, left_out = upload_plan(folder, None if run is None else exported_names(run))
        if left_out:  # said, not silently skipped
            print(f"python -m lib push: not uploaded (04's last run did not write them): {', '.join(left_out)}",
                  file=sys.stderr)
        if args.dry_run:
            print(json.dumps({"repo": args.repo, "folder": str(folder), "files": files,
                              "total_bytes": sum(f["bytes"] for f in files), "left_out": left_out}, indent=2))
            return 0
        token = os.environ.get("HF_TOKEN", "")
        if not token:
            print("python -m lib push: set HF_TOKEN to a write token (https://huggingface.co/settings/tokens); it is "
                  "read from the environment only", file=sys.stderr)
            return SETUP_ERROR
        url = push_folder(folder, args.repo, token, files, args.private, f"thinkdistill: {args.recipe or folder.name}")
    except (ParamsError, PushError) as error:
        print(f"python -m lib push: {error}", file=sys.stderr)
        return getattr(error, "status", SETUP_ERROR)
    print(json.dumps({"repo": args.repo, "commit": url, "files": files}))
    return 0
