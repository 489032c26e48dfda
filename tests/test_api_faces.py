"""Face behaviour of the committed store's ``default`` variant through the API, on real photo sets.

Skipped while the committed store has no ``default`` embedder. The accuracy figures are printed
(``pytest -s tests/test_api_faces.py``) and attached to the test report as properties.
"""

from __future__ import annotations

import csv
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.api_support import COMMITTED_DEFAULT, E2E, encode, needs_real_model

pytest_plugins = ["tests.api_fixtures"]
pytestmark = needs_real_model

DEEPFACE = E2E / "deepface"
BBT = E2E / "bbt"
PEOPLE = sorted(p.name for p in BBT.iterdir() if p.is_dir())

# Floors the default variant must clear; what it reaches is printed (see the module docstring).
MIN_DEEPFACE_ACCURACY = 0.90
MIN_BBT_TOP1 = 12 / 16


def verify(client: TestClient, a: bytes, b: bytes, headers: dict[str, str] | None = None) -> dict:
    files = {"image_a": ("a", a, "application/octet-stream"), "image_b": ("b", b, "application/octet-stream")}
    response = client.post("/v1/verify", files=files, headers=headers or {})
    assert response.status_code == 200, response.text
    return response.json()


def test_deepface_labelled_pairs(
    real_store_client: TestClient, record_property: Callable[[str, object], None]
) -> None:
    rows = list(csv.DictReader((DEEPFACE / "master.csv").open()))
    # 300 pairs (38 same, 262 different); the "299" is `wc -l` on a file without a final newline.
    assert len(rows) == 300
    cache: dict[str, bytes] = {}
    outcomes = []
    for row in rows:
        a, b = (
            cache.setdefault(name, (DEEPFACE / name).read_bytes()) for name in (row["file_x"], row["file_y"])
        )
        body = verify(real_store_client, a, b)
        outcomes.append((row["Decision"] == "Yes", body["match"], body["score"]))
    same = [o for o in outcomes if o[0]]
    different = [o for o in outcomes if not o[0]]
    accuracy = sum(truth == match for truth, match, _ in outcomes) / len(outcomes)
    tar = sum(match for _, match, _ in same) / len(same)
    far = sum(match for _, match, _ in different) / len(different)
    summary = (
        f"deepface master.csv via /v1/verify with {COMMITTED_DEFAULT}: accuracy {accuracy:.4f} "
        f"({len(same)} same / {len(different)} different pairs), "
        f"true-accept {tar:.3f}, false-accept {far:.4f}"
    )
    print(summary)
    record_property("deepface_accuracy", round(accuracy, 4))
    record_property("deepface_summary", summary)
    assert accuracy >= MIN_DEEPFACE_ACCURACY, summary


def test_bbt_enrol_identify_delete(
    real_store_client: TestClient, record_property: Callable[[str, object], None]
) -> None:
    client = real_store_client
    assert len(PEOPLE) == 8
    for person in PEOPLE:
        images = [
            ("images", (f"{i}.png", (BBT / person / f"{person}{i}.png").read_bytes(), "image/png"))
            for i in (1, 2, 3)
        ]
        response = client.post("/v1/enroll", data={"user_id": f"bbt-{person}"}, files=images)
        assert response.status_code == 201, response.text

    correct = 0
    for person in PEOPLE:
        for i in (4, 5):
            photo = (BBT / person / f"{person}{i}.png").read_bytes()
            response = client.post("/v1/identify", files={"image": ("p.png", photo, "image/png")})
            assert response.status_code == 200, response.text
            candidates = response.json()["candidates"]
            correct += bool(candidates) and candidates[0]["user_id"] == f"bbt-{person}"
    summary = (
        f"bbt: {correct}/16 held-out crops identified top-1 ({COMMITTED_DEFAULT}, 3 crops enrolled each)"
    )
    print(summary)
    record_property("bbt_top1", correct)
    assert correct / 16 >= MIN_BBT_TOP1, summary

    # Erasure: after a delete, the person is no longer found at all.
    assert client.delete("/v1/users/bbt-penny").status_code == 200
    probe = (BBT / "penny" / "penny4.png").read_bytes()
    after = client.post("/v1/identify", files={"image": ("p.png", probe, "image/png")}).json()
    assert "bbt-penny" not in [c["user_id"] for c in after["candidates"]]
    for person in PEOPLE:
        client.delete(f"/v1/users/bbt-{person}")


def test_exif_rotated_photo_scores_like_the_upright_one(real_store_client: TestClient) -> None:
    reference = (DEEPFACE / "img2.jpg").read_bytes()  # same person as img1
    with Image.open(DEEPFACE / "img1.jpg") as img:
        upright = img.convert("RGB")
    # Both versions go through one JPEG re-encoding, so only the EXIF turn differs between them.
    plain = encode(upright, "JPEG", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": stored pixels are turned counter-clockwise
    turned = encode(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif)

    a = verify(real_store_client, plain, reference)
    b = verify(real_store_client, turned, reference)
    assert b["score"] == pytest.approx(a["score"], abs=0.01)
    # the box is in upright coordinates (the stored image is 640×473, the upright one 473×640)
    assert b["faces"][0]["box"] == pytest.approx(a["faces"][0]["box"], abs=3)


def test_default_variant_by_header(real_store_client: TestClient) -> None:
    a, b = (DEEPFACE / "img1.jpg").read_bytes(), (DEEPFACE / "img2.jpg").read_bytes()
    assert COMMITTED_DEFAULT is not None
    name = COMMITTED_DEFAULT.split("@")[0]
    plain = verify(real_store_client, a, b)
    assert plain["variant"] == COMMITTED_DEFAULT
    for header in (COMMITTED_DEFAULT, name, "default"):
        assert verify(real_store_client, a, b, {"X-Model-Variant": header}) == plain
    response = real_store_client.post(
        "/v1/verify",
        files={"image_a": ("a", a, "image/jpeg"), "image_b": ("b", b, "image/jpeg")},
        headers={"X-Model-Variant": f"{name}@999"},
    )
    assert response.status_code == 400 and response.json()["code"] == "unknown_variant"
    assert COMMITTED_DEFAULT in response.json()["valid_variants"]
