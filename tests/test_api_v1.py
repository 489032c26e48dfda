"""The /v1 API through TestClient: gallery life cycle, variants, API key, metrics, readiness, OpenAPI.

These run on a copy of the committed store plus two synthetic variants (see ``tests/api_fixtures.py``), so
there are always at least two variants to switch between; face-quality checks are in test_api_faces.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from model_store import ModelStore
from service.main import create_app
from tests.api_support import E2E, assert_problem, build_store, make_settings

pytest_plugins = ["tests.api_fixtures"]

PHOTO_A = E2E / "deepface" / "img1.jpg"
PHOTO_B = E2E / "deepface" / "img2.jpg"  # same person as img1


def files(*paths: Path) -> dict[str, tuple[str, bytes, str]]:
    names = ["image_a", "image_b"] if len(paths) == 2 else ["image"]
    return {name: (p.name, p.read_bytes(), "image/jpeg") for name, p in zip(names, paths, strict=True)}


def enrol(client: TestClient, user_id: str, *paths: Path):  # type: ignore[no-untyped-def]
    uploads = [("images", (p.name, p.read_bytes(), "image/png")) for p in paths]
    return client.post("/v1/enroll", data={"user_id": user_id}, files=uploads)


def default_ref(client: TestClient) -> str:
    return client.get("/v1/models").json()["default"]


# --- verify & variants ----------------------------------------------------------------------------


def test_verify_answers_with_threshold_and_faces(client: TestClient) -> None:
    response = client.post("/v1/verify", files=files(PHOTO_A, PHOTO_B))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"match", "score", "threshold", "variant", "faces"}
    assert body["variant"] == default_ref(client)
    assert body["match"] == (body["score"] >= body["threshold"])
    assert -1.0 <= body["score"] <= 1.0
    assert [f["count"] for f in body["faces"]] == [1, 1]
    assert all(len(f["box"]) == 4 and 0.9 < f["score"] <= 1 for f in body["faces"])


def test_same_photo_scores_one(client: TestClient) -> None:
    body = client.post("/v1/verify", files=files(PHOTO_A, PHOTO_A)).json()
    assert body["score"] == pytest.approx(1.0, abs=1e-5) and body["match"] is True


def test_variant_switching_by_header(client: TestClient) -> None:
    default = default_ref(client)
    plain = client.post("/v1/verify", files=files(PHOTO_A, PHOTO_B)).json()
    by_ref = client.post(
        "/v1/verify", files=files(PHOTO_A, PHOTO_B), headers={"X-Model-Variant": default}
    ).json()
    by_name = client.post(
        "/v1/verify", files=files(PHOTO_A, PHOTO_B), headers={"X-Model-Variant": default.split("@")[0]}
    ).json()
    by_alias = client.post(
        "/v1/verify", files=files(PHOTO_A, PHOTO_B), headers={"X-Model-Variant": "default"}
    ).json()
    assert plain == by_ref == by_name == by_alias

    other = client.post("/v1/verify", files=files(PHOTO_A, PHOTO_B), headers={"X-Model-Variant": "synth-b"})
    assert other.status_code == 200
    assert other.json()["variant"] == "synth-b@1"
    assert other.json()["threshold"] == 0.9
    assert other.json()["score"] != pytest.approx(plain["score"], abs=1e-4)  # a different model


def test_unknown_variant_lists_the_valid_ones(client: TestClient) -> None:
    for bad in ("nope", "synth-b@7", "mtcnn", "mtcnn@1"):  # the detector is not an embedding variant
        response = client.post("/v1/verify", files=files(PHOTO_A, PHOTO_B), headers={"X-Model-Variant": bad})
        body = assert_problem(response, 400, "unknown_variant")
        assert {"synth-a@1", "synth-b@1", "synth-b", "default"} <= set(body["valid_variants"])
        assert "mtcnn" not in body["valid_variants"]
        assert "synth-b@1" in body["detail"]


def test_models_listing(client: TestClient, mixed_store: ModelStore) -> None:
    body = client.get("/v1/models").json()
    refs = [v["ref"] for v in body["variants"]]
    assert {"synth-a@1", "synth-b@1"} <= set(refs) and "mtcnn@1" not in refs
    assert body["detector"] == "mtcnn@2" and body["target_fmr"] == "1e-3"
    defaults = [v for v in body["variants"] if v["default"]]
    assert [v["ref"] for v in defaults] == [body["default"]]
    assert defaults[0]["aliases"] == ["default"]
    for variant in body["variants"]:
        manifest = mixed_store.manifest(variant["ref"])
        assert variant["threshold"] == manifest.thresholds["1e-3"]
        assert variant["sha256"] == manifest.artifact.sha256
        assert variant["embedding_dim"] == manifest.output.embedding_dim
        assert variant["parent"] == manifest.parent
        assert (variant["pruning"] is None) == (manifest.pruning is None)
    pruned = next(v for v in body["variants"] if v["ref"] == "synth-b@1")
    assert pruned["pruning"] == {
        "criterion": "taylor",
        "filters_removed_share": 0.3,
        "params_removed_share": 0.45,
        "flops_removed_share": 0.25,
    }  # the run's internal paths and config stay out of the API


# --- gallery life cycle ---------------------------------------------------------------------------


def test_enrol_identify_delete(client: TestClient) -> None:
    variants = [v["ref"] for v in client.get("/v1/models").json()["variants"]]
    response = enrol(client, "user-ab", PHOTO_A, PHOTO_B)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["images"] == 2 and body["total_templates"] == 2 * len(variants)
    assert body["templates_added"] == dict.fromkeys(variants, 2)  # every variant, every image

    user = client.get("/v1/users/user-ab").json()
    assert user["total_templates"] == 2 * len(variants)
    assert {g["variant"] for g in user["templates"]} == set(variants)
    assert all(g["served"] and g["count"] == 2 for g in user["templates"])
    assert "embedding" not in str(user)

    # the enrolled photo itself: score 1 under every variant, whichever is asked for
    for variant in variants:
        found = client.post("/v1/identify", files=files(PHOTO_A), headers={"X-Model-Variant": variant})
        assert found.status_code == 200, found.text
        top = found.json()["candidates"][0]
        assert top["user_id"] == "user-ab" and top["score"] == pytest.approx(1.0, abs=1e-5)
        assert found.json()["variant"] == variant

    # enrolling again adds templates
    assert enrol(client, "user-ab", PHOTO_A).json()["total_templates"] == 3 * len(variants)

    deleted = client.delete("/v1/users/user-ab")
    assert deleted.status_code == 200 and deleted.json()["deleted_templates"] == 3 * len(variants)
    assert_problem(client.delete("/v1/users/user-ab"), 404, "user_not_found")
    assert_problem(client.get("/v1/users/user-ab"), 404, "user_not_found")
    after = client.post("/v1/identify", files=files(PHOTO_A)).json()
    assert "user-ab" not in [c["user_id"] for c in after["candidates"]]


def test_identify_top_k_and_threshold(client: TestClient) -> None:
    people = sorted((E2E / "bbt").glob("*/*1.png"))[:4]
    for path in people:
        assert enrol(client, f"topk-{path.parent.name}", path).status_code == 201
    probe = people[0]
    headers = {"X-Model-Variant": "synth-b"}
    body = client.post("/v1/identify?top_k=2", files=files(probe), headers=headers).json()
    assert len(body["candidates"]) <= 2
    assert body["candidates"][0]["user_id"] == f"topk-{probe.parent.name}"
    assert all(c["score"] >= body["threshold"] for c in body["candidates"])
    for path in people:
        client.delete(f"/v1/users/topk-{path.parent.name}")


def test_enrol_validation(client: TestClient) -> None:
    assert_problem(client.post("/v1/enroll", data={"user_id": "x"}), 422, "invalid_request")
    no_user = client.post("/v1/enroll", files=[("images", ("a.jpg", PHOTO_A.read_bytes(), "image/jpeg"))])
    assert_problem(no_user, 422, "invalid_request")


def test_face_too_small(mixed_store: ModelStore, tmp_path: Path) -> None:
    settings = make_settings(mixed_store.root, tmp_path / "g.db", min_face_px=300)  # img1's face: ~210 px
    with TestClient(create_app(settings)) as client:
        body = assert_problem(client.post("/v1/identify", files=files(PHOTO_A)), 422, "face_too_small")
        assert body["field"] == "image"


# --- API key --------------------------------------------------------------------------------------


def test_api_key_guards_every_v1_route(mixed_store: ModelStore, tmp_path: Path) -> None:
    app = create_app(make_settings(mixed_store.root, tmp_path / "g.db", api_key="s3cret-key"))
    with TestClient(app) as client:
        v1_routes = [
            (method.upper(), path)
            for path, operations in app.openapi()["paths"].items()
            if path.startswith("/v1/")
            for method in operations
        ]
        assert len(v1_routes) == 6
        for method, path in v1_routes:
            url = path.replace("{user_id}", "someone")
            for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": "s3cret-key "}, {"X-API-Key": ""}):
                response = client.request(method, url, headers=headers)
                body = assert_problem(response, 401, "unauthorized")
                assert "s3cret" not in body["detail"]
                assert response.headers["www-authenticate"].startswith("APIKey")
        key = {"X-API-Key": "s3cret-key"}
        assert client.get("/v1/models", headers=key).status_code == 200
        assert client.post("/v1/verify", files=files(PHOTO_A, PHOTO_B), headers=key).status_code == 200
        assert_problem(client.get("/v1/users/someone", headers=key), 404, "user_not_found")
        # probes and metrics stay open for the platform
        for path in ("/healthz", "/readyz", "/metrics"):
            assert client.get(path).status_code == 200


# --- readiness, metrics, OpenAPI ------------------------------------------------------------------


def test_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    body = client.get("/readyz").json()
    assert body["status"] == "ready" and set(body["checks"].values()) == {"ok"}
    assert body["detector"] == "mtcnn@2" and body["default_variant"] in body["variants"]


def test_not_ready_without_an_embedder(tmp_path: Path) -> None:
    # A store holding only the detector: the process runs and says why it is not ready; requests get 503.
    store = build_store(tmp_path / "models", synthetic=[], default=None, committed_embedders=False)
    with TestClient(create_app(make_settings(store.root, tmp_path / "g.db"))) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["embedders"] != "ok"
        assert_problem(client.post("/v1/verify", files=files(PHOTO_A, PHOTO_B)), 503, "not_ready")
        assert client.get("/v1/models").json()["variants"] == []


def test_metrics_after_requests(client: TestClient) -> None:
    client.post("/v1/verify", files=files(PHOTO_A, PHOTO_B))
    client.post("/v1/verify", files={"image_a": ("a.jpg", b"", "image/jpeg"), "image_b": ("b.jpg", b"", "x")})
    enrol(client, "metrics-user-0042", PHOTO_A)
    client.get("/v1/users/metrics-user-0042")
    client.delete("/v1/users/metrics-user-0042")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    default = default_ref(client)

    def value(pattern: str) -> float:
        match = re.search(pattern + r" ([0-9.e+]+)$", text, re.MULTILINE)
        assert match, pattern
        return float(match.group(1))

    assert (
        value(rf'faceverify_request_duration_seconds_count\{{endpoint="/v1/verify",variant="{default}"\}}')
        >= 2
    )
    assert (
        value(r'faceverify_request_duration_seconds_count\{endpoint="/v1/users/\{user_id\}",variant="none"\}')
        >= 2
    )
    assert value(r'faceverify_request_duration_seconds_count\{endpoint="/v1/enroll",variant="all"\}') >= 1
    for stage in ("decode", "detect", "align", "embed", "match"):
        assert (
            value(rf'faceverify_stage_duration_seconds_count\{{stage="{stage}",variant="{default}"\}}') >= 1
        )
    assert (
        value(r'faceverify_stage_duration_seconds_count\{stage="embed",variant="synth-b@1"\}') >= 1
    )  # enrol
    assert value(rf'faceverify_decisions_total\{{decision="match",variant="{default}"\}}') >= 1
    assert value(r'faceverify_errors_total\{code="invalid_image"\}') >= 1
    assert re.search(rf'faceverify_model_info\{{default="true",[^}}]*variant="{default}"', text)
    # nothing about people or files in any label
    for secret in ("metrics-user-0042", "img1.jpg", "a.jpg"):
        assert secret not in text


def test_openapi_is_complete(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operations = {(path, method): op for path, ops in spec["paths"].items() for method, op in ops.items()}
    v1 = {key: op for key, op in operations.items() if key[0].startswith("/v1/")}
    assert {(p, m) for p, m in v1} == {
        ("/v1/verify", "post"),
        ("/v1/identify", "post"),
        ("/v1/enroll", "post"),
        ("/v1/users/{user_id}", "get"),
        ("/v1/users/{user_id}", "delete"),
        ("/v1/models", "get"),
    }
    schemas = spec["components"]["schemas"]
    for (path, method), op in v1.items():
        assert op.get("summary"), (path, method)
        ok = op["responses"]["201" if path == "/v1/enroll" else "200"]
        ref = ok["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        assert schemas[ref].get("examples"), ref
        assert "401" in op["responses"]
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")):
                assert set(response["content"]) == {"application/problem+json"}, (path, status)
        headers = {p["name"] for p in op.get("parameters", []) if p["in"] == "header"}
        assert "x-api-key" in headers
        if path in ("/v1/verify", "/v1/identify"):
            assert "x-model-variant" in headers
    problem = v1[("/v1/verify", "post")]["responses"]["422"]["content"]["application/problem+json"]["schema"]
    assert problem["examples"][0]["code"] == "no_face_detected"


def test_served_variants_setting_limits_sessions_and_templates(
    mixed_store: ModelStore, tmp_path: Path
) -> None:
    """FACEVERIFY_SERVED_VARIANTS: only those (and the default) get a session and enrolment templates."""
    settings = make_settings(mixed_store.root, tmp_path / "g.db", served_variants="synth-b, sface")
    with TestClient(create_app(settings)) as client:
        served = {v["ref"] for v in client.get("/v1/models").json()["variants"]}
        assert served == {str(mixed_store.resolve(r)) for r in ("default", "synth-b", "sface")}
        photo = ("images", ("a.jpg", PHOTO_A.read_bytes(), "image/jpeg"))
        enrolled = client.post("/v1/enroll", data={"user_id": "few"}, files=[photo]).json()
        assert set(enrolled["templates_added"]) == served, enrolled
        assert_problem(client.post("/v1/verify", headers={"X-Model-Variant": "synth-a"}, files={
            "image_a": ("a", PHOTO_A.read_bytes(), "image/jpeg"),
            "image_b": ("b", PHOTO_A.read_bytes(), "image/jpeg"),
        }), 400, "unknown_variant")  # fmt: skip
