"""The public training-face sources (../shared/datasets/SOURCES.md) and their extraction from git snapshots.

Nothing derived from LFW is used: the mask set's named people who also appear in LFW are dropped, and the
sources SOURCES.md warns about are not listed.
"""

from __future__ import annotations

import csv
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

MIRROR_ROOT = Path("/work/.mirror")
# Named people of the mask set who are also LFW identities (name match against LFW's folder names).
RMFD_LFW_OVERLAP = frozenset({"tianliang", "zhangziyi"})


@dataclass(frozen=True)
class Source:
    name: str
    repo: str  # owner/name as fetched
    paths: tuple[str, ...]  # folders inside the repo
    licence: str
    description: str

    def git_dir(self, mirror_root: Path = MIRROR_ROOT) -> Path:
        return mirror_root / self.repo.replace("/", "+") / "repo"


SOURCES: dict[str, Source] = {
    s.name: s
    for s in [
        Source(
            "celeba_hq",
            "matush97/faceRecognition",
            ("Celeb",),
            "non-commercial research",
            "CelebA originals, 6.3k photos of 299 identities",
        ),
        Source(
            "celeba_small",
            "karthikSingireddy/cs389-hw4",
            ("celebA",),
            "non-commercial research",
            "10k aligned CelebA faces 89×109",
        ),
        Source(
            "rmfd",
            "chandrikadeb7/Face-Mask-Detection",
            ("dataset/without_mask",),
            "research",
            "1.9k unmasked faces, 1.25k of 99 named people",
        ),
        Source(
            "fairface",
            "sumanvithaeadala/EthnicityDetection",
            ("fair_face/train", "fair_face/val"),
            "CC BY 4.0",
            "FairFace 45k faces, no identities",
        ),
        Source(
            "utkface",
            "mattans/AgeProgression",
            ("data/UTKFace/unlabeled",),
            "non-commercial research",
            "UTKFace 23.7k aligned faces",
        ),
        Source(
            "allage",
            "middleyuan/All-Age-Faces-Dataset",
            ("All-Age-Faces Dataset/original images",),
            "research",
            "All-Age-Faces 13.3k, mostly Asian",
        ),
        Source(
            "scut", "dduygaucho/SCUT-FBP5000", ("data/landing/Images",), "research", "SCUT-FBP 5.5k faces"
        ),
    ]
}


def _celeba_identities(mirror_root: Path) -> dict[str, str]:
    text = subprocess.run(
        [
            "git",
            "--git-dir",
            str(SOURCES["celeba_hq"].git_dir(mirror_root)),
            "show",
            "HEAD:identity_CelebA.txt",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ids = {}
    for line in text.splitlines()[1:]:  # header: "image identity"
        parts = line.split()
        if len(parts) == 2:
            ids[parts[0]] = f"celeba:{parts[1]}"
    return ids


_RMFD_NAMED = re.compile(r"^0_0_(?P<name>[a-z]+)_\d+\.jpg$")


def extract(source: Source, raw_root: Path, mirror_root: Path = MIRROR_ROOT) -> Path:
    """``git archive | tar -x`` the source's folders into ``raw_root/<name>``; write ``labels.csv``.

    Idempotent: a finished extraction leaves ``.extracted`` and is not repeated.
    """
    out = raw_root / source.name
    if (out / ".extracted").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen(
        [
            "git",
            "--git-dir",
            str(source.git_dir(mirror_root)),
            "archive",
            "--format=tar",
            "HEAD",
            *source.paths,
        ],
        stdout=subprocess.PIPE,
    )
    subprocess.run(["tar", "-x", "-C", str(out)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise RuntimeError(f"git archive failed for {source.repo}")

    labels: dict[str, str | None] = {}
    celeba = _celeba_identities(mirror_root) if source.name.startswith("celeba") else {}
    excluded = []
    for path in sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")):
        rel = path.relative_to(out).as_posix()
        if source.name.startswith("celeba"):
            labels[rel] = celeba.get(path.name)
        elif source.name == "rmfd":
            match = _RMFD_NAMED.match(path.name)
            if match and match["name"] in RMFD_LFW_OVERLAP:
                excluded.append(rel)
                path.unlink()
                continue
            labels[rel] = f"rmfd:{match['name']}" if match else None
        else:
            labels[rel] = None
    with (out / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "identity"])
        writer.writerows((f, i or "") for f, i in labels.items())
    if excluded:
        (out / "excluded_lfw_overlap.txt").write_text("\n".join(excluded) + "\n")
    (out / ".extracted").touch()
    return out
