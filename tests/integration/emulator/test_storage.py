"""CDN uploads the way fal's Python client makes them (docs/fal-contract.md §4), and inputs fetched by URL."""

from __future__ import annotations

import base64
import hashlib
import struct
import zlib
from datetime import datetime

import httpx
import pytest

from falflow_tools.emulator import RunningEmulator
from tests.fixtures.fal_emulator import EmulatorFactory
from tests.integration.emulator.helpers import key_client, run_to_completion


def tiny_png(width: int, height: int) -> bytes:
    """A grey PNG built here, independently of the emulator's own encoder."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def cdn_token(client: httpx.Client, fal: RunningEmulator) -> dict[str, str]:
    response = client.post(
        f"{fal.urls.rest_url}/storage/auth/token", params={"storage_type": "fal-cdn-v3"}, json={}
    )
    assert response.status_code == 200
    token: dict[str, str] = response.json()
    return token


def upload_png(client: httpx.Client, fal: RunningEmulator, png: bytes) -> str:
    """Upload through the token flow; returns the access URL."""
    token = cdn_token(client, fal)
    response = client.post(
        f"{token['base_url']}/files/upload",
        content=png,
        headers={"Authorization": f"{token['token_type']} {token['token']}", "Content-Type": "image/png"},
    )
    assert response.status_code == 200
    access_url: str = response.json()["access_url"]
    return access_url


def test_token_then_upload_then_download(
    fal: RunningEmulator, client: httpx.Client, anonymous: httpx.Client
) -> None:
    token = cdn_token(client, fal)
    assert token["base_url"] == fal.urls.cdn_url
    assert datetime.fromisoformat(token["expires_at"]).tzinfo is not None
    data = tiny_png(40, 30)

    uploaded = anonymous.post(
        f"{token['base_url']}/files/upload",
        content=data,
        headers={
            "Authorization": f"{token['token_type']} {token['token']}",
            "Content-Type": "image/png",
            "X-Fal-File-Name": "../../etc/photo.png",
        },
    )
    assert uploaded.status_code == 200
    access_url = uploaded.json()["access_url"]
    assert access_url.startswith(f"{fal.urls.cdn_url}/files/")
    assert access_url.endswith("/photo.png")  # the name cannot climb out of its folder

    served = anonymous.get(access_url)  # CDN files are public
    assert (served.status_code, served.content) == (200, data)
    assert served.headers["content-type"] == "image/png"


def test_uploads_need_a_token_or_key(fal: RunningEmulator, anonymous: httpx.Client) -> None:
    for headers in ({}, {"Authorization": "Bearer made-up"}):
        response = anonymous.post(f"{fal.urls.cdn_url}/files/upload", content=b"x", headers=headers)
        assert response.status_code == 401
    assert anonymous.post(f"{fal.urls.rest_url}/storage/auth/token", json={}).status_code == 401


def test_multipart_upload_assembles_parts_in_order(
    fal: RunningEmulator, client: httpx.Client, anonymous: httpx.Client
) -> None:
    token = cdn_token(client, fal)
    auth = {"Authorization": f"{token['token_type']} {token['token']}"}
    parts = [bytes([n]) * (300_000 + n) for n in range(1, 4)]
    begun = anonymous.post(
        f"{token['base_url']}/files/upload/multipart",
        headers=auth | {"Content-Type": "video/mp4", "X-Fal-File-Name": "clip.mp4"},
    ).json()
    access_url, upload_id = begun["access_url"], begun["uploadId"]

    etags = {}
    for number in (3, 1, 2):  # parts may arrive in any order
        response = anonymous.put(
            f"{access_url}/multipart/{upload_id}/{number}", content=parts[number - 1], headers=auth
        )
        assert response.status_code == 200
        assert response.headers["etag"] == response.json()["etag"]
        assert response.headers["etag"].strip('"') == hashlib.md5(parts[number - 1]).hexdigest()
        etags[number] = response.headers["etag"]

    bad = anonymous.post(
        f"{access_url}/multipart/{upload_id}/complete",
        json={"parts": [{"partNumber": 1, "etag": '"nope"'}, {"partNumber": 2, "etag": etags[2]}]},
        headers=auth,
    )
    assert bad.status_code == 400
    done = anonymous.post(
        f"{access_url}/multipart/{upload_id}/complete",
        json={"parts": [{"partNumber": n, "etag": etags[n]} for n in (1, 2, 3)]},
        headers=auth,
    )
    assert (done.status_code, done.json()) == (200, {"access_url": access_url})

    served = anonymous.get(access_url)
    assert served.content == b"".join(parts)
    assert served.headers["content-type"] == "video/mp4"


def test_initiate_gives_a_presigned_upload_url(
    fal: RunningEmulator, client: httpx.Client, anonymous: httpx.Client
) -> None:
    initiated = client.post(
        f"{fal.urls.rest_url}/storage/upload/initiate",
        params={"storage_type": "gcs"},
        json={"file_name": "notes.txt", "content_type": "text/plain"},
    ).json()

    assert anonymous.put(initiated["upload_url"], content=b"hello").status_code == 200
    assert anonymous.put(initiated["upload_url"], content=b"again").status_code == 403  # one use
    assert anonymous.get(initiated["file_url"]).content == b"hello"


def test_upscaler_reads_the_uploaded_image(fal: RunningEmulator, client: httpx.Client) -> None:
    access_url = upload_png(client, fal, tiny_png(64, 48))

    _, result = run_to_completion(
        client, fal, "fal-ai/clarity-upscaler", {"image_url": access_url, "upscale_factor": 2}
    )
    image = result.json()["image"]

    assert (image["width"], image["height"]) == (128, 96)
    downloaded = client.get(image["url"]).content
    assert len(downloaded) == image["file_size"]
    assert struct.unpack(">II", downloaded[16:24]) == (128, 96)


def test_inputs_on_other_hosts_are_downloaded(
    fal: RunningEmulator, client: httpx.Client, fal_emulator_factory: EmulatorFactory
) -> None:
    elsewhere = fal_emulator_factory()
    with key_client(elsewhere) as other:
        remote_url = upload_png(other, elsewhere, tiny_png(100, 50))

    _, result = run_to_completion(
        client, fal, "fal-ai/clarity-upscaler", {"image_url": remote_url, "upscale_factor": 3}
    )

    assert (result.json()["image"]["width"], result.json()["image"]["height"]) == (300, 150)
    remote_path = httpx.URL(remote_url).path
    fetched = [r for r in elsewhere.control.requests() if (r.method, r.path) == ("GET", remote_path)]
    assert len(fetched) == 1  # the runner fetched it like fal's would


@pytest.mark.parametrize(
    ("upscale_factor", "status", "error_type"),
    [(4, 200, None), (4.5, 422, "less_than_equal")],
)
def test_upscaler_validates_its_factor(
    fal: RunningEmulator, client: httpx.Client, upscale_factor: float, status: int, error_type: str | None
) -> None:
    data_uri = "data:image/png;base64," + base64.b64encode(tiny_png(10, 10)).decode()
    _, result = run_to_completion(
        client, fal, "fal-ai/clarity-upscaler", {"image_url": data_uri, "upscale_factor": upscale_factor}
    )
    assert result.status_code == status
    if error_type:
        assert result.json()["detail"][0]["type"] == error_type
    else:
        assert result.json()["image"]["width"] == 40


def test_too_large_upscales_fail_with_image_too_large(fal_emulator_factory: EmulatorFactory) -> None:
    fal = fal_emulator_factory(max_image_side=256)
    with key_client(fal) as client:
        url = upload_png(client, fal, tiny_png(200, 100))
        _, result = run_to_completion(client, fal, "fal-ai/clarity-upscaler", {"image_url": url})

    assert result.status_code == 422
    (detail,) = result.json()["detail"]
    assert detail["type"] == "image_too_large"
    assert detail["ctx"] == {"max_width": 256, "max_height": 256}
