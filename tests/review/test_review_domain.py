"""The review domain against moto: queue through the index, conditional answers, copies."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import re
import threading
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient
from moto import mock_aws
from PIL import Image
from scones_core.errors import ObjectChanged, ObjectNotFound
from scones_core.monitoring.timestamps import format_millis
from scones_core.objects import NULL_VERSION
from scones_core.records import NEITHER, REVIEW_LABEL_ATTRIBUTE, Status
from scones_core.review import (
    ImageNotShown,
    ReviewConflict,
    ReviewError,
    ReviewIncomplete,
    ReviewService,
    ReviewSettings,
    drawn_for_review,
)
from starlette.types import Message

from scones.review.app import (
    LOOPBACK_HOSTS,
    MAX_BODY_BYTES,
    TOKEN_HEADER,
    ReviewAppSettings,
    build_app,
)
from scones.review.target import image_limits
from scones.template_params import (
    PROJECT_ROOT,
    parameter_default,
    parameter_defaults,
    table_definition,
)

REGION = "us-east-1"
BUCKET = "scones-review-test"
TABLE = "scones-review-results"
TOKEN = "a-review-token"
WITH_TOKEN = {TOKEN_HEADER: TOKEN}
NOW = datetime(2026, 11, 25, 13, 0, tzinfo=UTC)
LABELS = ("bicycle", "motorcycle")
BIKE = PROJECT_ROOT / "samples" / "bicycle" / "bike_s_001414.png"
MOTO_IMG = next(iter(sorted((PROJECT_ROOT / "samples" / "motorcycle").glob("*.png"))))


class NoScan:
    """A DynamoDB client that refuses Scan: the review reads through the status index."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        if name == "scan":
            raise AssertionError("the review must not scan the results table")
        return getattr(self._client, name)


class Env:
    def __init__(self, s3: Any, dynamodb: Any) -> None:
        self.s3 = s3
        self.dynamodb = dynamodb
        self.table = boto3.resource("dynamodb", region_name=REGION).Table(TABLE)
        self.count = 0

    def upload(self, path: Any, key: str, data: bytes | None = None, **put: Any) -> str:
        body = path.read_bytes() if data is None else data
        response = self.s3.put_object(Bucket=BUCKET, Key=key, Body=body, **put)
        return str(response["VersionId"])

    def record(
        self,
        status: str,
        *,
        path: Any = BIKE,
        label: str = "bicycle",
        age: timedelta,
        data: bytes | None = None,
        suffix: str = ".png",
        put: dict[str, Any] | None = None,
        **extra: Any,
    ) -> str:
        """A classified record of a real uploaded image (``path``, or the bytes ``data``),
        as the workflow writes it."""
        self.count += 1
        key = f"incoming/img-{self.count}{suffix}"
        version = self.upload(path, key, data, **(put or {}))
        record_id = f"{BUCKET}/{key}#{version}"
        when = format_millis(NOW - age)
        self.table.put_item(
            Item={
                "pk": record_id,
                "bucket": BUCKET,
                "key": key,
                "version_id": version,
                "status": status,
                "label": label,
                "confidence": Decimal("0.61") if status == "NEEDS_REVIEW" else Decimal("0.99"),
                "probabilities": {"bicycle": Decimal("0.61"), "motorcycle": Decimal("0.39")},
                "source_format": "PNG",
                "event_time": when,
                "recorded_at": when,
                **extra,
            }
        )
        return record_id

    def get(self, record_id: str) -> dict[str, Any]:
        return dict(self.table.get_item(Key={"pk": record_id})["Item"])


def settings(share: float = 0.0) -> ReviewSettings:
    return ReviewSettings(
        bucket=BUCKET,
        table_name=TABLE,
        labels=LABELS,
        labelled_prefix=parameter_default("LabelledDataPrefix"),
        sample_share=share,
        sample_window=timedelta(days=1),
        image_limits=image_limits(parameter_defaults()),
    )


def shown(png: bytes) -> Image.Image:
    """A PNG the review server sent, decoded (it must be one)."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        return image.copy()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        dynamodb.create_table(TableName=TABLE, **table_definition("ResultsTable"))
        yield Env(s3, dynamodb)


def service(env: Env, share: float = 0.0) -> ReviewService:
    return ReviewService(
        settings(share), s3=env.s3, dynamodb=NoScan(env.dynamodb), clock=lambda: NOW
    )


def web(reviews: ReviewService) -> TestClient:
    """The review app on loopback, as a test client (whose requests name "testserver")
    sending the API's token, as the page opened from the printed URL does."""
    return TestClient(app_for(reviews), headers=WITH_TOKEN)


def app_for(
    reviews: ReviewService,
    allowed_hosts: frozenset[str] | None = None,
    reviewer: str = "ana",
    queue_limit: int = 200,
) -> Any:
    """The review app as `scones review` builds it, its API wanting ``TOKEN``."""
    hosts = LOOPBACK_HOSTS | {"testserver"} if allowed_hosts is None else allowed_hosts
    settings = ReviewAppSettings(
        reviewer, TABLE, token=TOKEN, allowed_hosts=hosts, queue_limit=queue_limit
    )
    return build_app(reviews, settings)


def test_queue_lists_needs_review_and_sampled_accepted_only(env: Env) -> None:
    waiting = env.record("NEEDS_REVIEW", age=timedelta(hours=3))
    older = env.record("NEEDS_REVIEW", age=timedelta(days=30))
    sampled = env.record("ACCEPTED", age=timedelta(hours=2), review_sampled=True)
    env.record("ACCEPTED", age=timedelta(hours=1))
    env.record("REJECTED", age=timedelta(hours=1))
    env.record("REVIEWED", age=timedelta(hours=1), review_label="bicycle")
    # Drawn by some page: every page shows it, whatever its own share (0 draws no more).
    for share in (0.0, 0.5):
        items = service(env, share=share).queue().items
        assert [i.record_id for i in items] == [older, waiting, sampled]
    assert items[2].sampled and items[2].status == Status.ACCEPTED
    assert items[0].label == "bicycle" and items[0].confidence == pytest.approx(0.61)


def test_sampled_answers_never_push_the_uncertain_images_off_the_page(env: Env) -> None:
    drawn = [
        env.record("ACCEPTED", age=timedelta(hours=5 - n), review_sampled=True) for n in range(3)
    ]
    waiting = [env.record("NEEDS_REVIEW", age=timedelta(minutes=30 - n)) for n in range(3)]
    items = service(env).queue(limit=2).items
    # The first two of each kind, oldest upload first.
    assert [i.record_id for i in items] == drawn[:2] + waiting[:2]


def test_the_queue_says_when_more_images_wait_than_it_shows(env: Env) -> None:
    """A busy day's backlog: the page shows the first ``limit`` of each kind, and says when
    more wait (the reviewer answers these and reloads), of either kind."""
    waiting = [env.record("NEEDS_REVIEW", age=timedelta(minutes=30 - n)) for n in range(2)]
    assert service(env).queue(limit=2).more is False  # exactly the limit: nothing more
    assert service(env).queue(limit=1).more is True
    drawn = [
        env.record("ACCEPTED", age=timedelta(hours=5 - n), review_sampled=True) for n in range(3)
    ]
    queue = service(env).queue(limit=2)
    assert queue.more is True  # the third sampled one waits
    assert [i.record_id for i in queue.items] == drawn[:2] + waiting
    page = TestClient(app_for(service(env), queue_limit=2), headers=WITH_TOKEN)
    assert page.get("/api/queue").json()["more"] is True
    assert web(service(env)).get("/api/queue").json()["more"] is False  # 200 a kind


def test_records_not_as_the_stack_writes_them_are_left_out_of_the_queue_and_named(
    env: Env,
) -> None:
    """Items written by hand, by another tool or by an older stack: one of them must not
    keep every other image from the reviewers (the queue failed with a 502), nor be shown
    half (an empty key, a confidence of 0)."""
    waiting = env.record("NEEDS_REVIEW", age=timedelta(hours=3))
    sampled = env.record("ACCEPTED", age=timedelta(hours=2), review_sampled=True)
    text = env.record("NEEDS_REVIEW", age=timedelta(hours=2), confidence="high")
    odd = env.record("NEEDS_REVIEW", age=timedelta(minutes=90), probabilities={"bicycle": "most"})
    drawn = env.record("ACCEPTED", age=timedelta(hours=1), review_sampled=True, label=3)
    bare = f"{BUCKET}/incoming/bare.png#v1"  # only the keys of the table and of the index
    env.table.put_item(
        Item={"pk": bare, "status": "NEEDS_REVIEW", "recorded_at": format_millis(NOW)}
    )
    reviews = service(env)
    assert [i.record_id for i in reviews.queue().items] == [waiting, sampled]
    expected = [
        {"pk": text, "problems": ["confidence is a string, not a number"]},
        {"pk": odd, "problems": ["probabilities holds more than numbers"]},
        {"pk": bare, "problems": ["no bucket", "no key", "no label", "no confidence"]},
        {"pk": drawn, "problems": ["label is a number, not a string"]},
    ]
    assert [bad.to_json() for bad in reviews.queue().unreadable] == expected

    response = web(reviews).get("/api/queue")
    assert response.status_code == 200, response.text
    assert [i["record_id"] for i in response.json()["items"]] == [waiting, sampled]
    assert response.json()["unreadable"] == expected


def test_a_refused_draw_of_accepted_records_still_serves_the_queue_waiting(env: Env) -> None:
    """Drawing accepted records for review writes to the table; when that write is refused
    (throttled, a role without the grant), the images already waiting are still served,
    and the page says what failed. The next load draws again."""
    waiting = env.record("NEEDS_REVIEW", age=timedelta(hours=3))
    accepted = [env.record("ACCEPTED", age=timedelta(hours=1)) for _ in range(3)]

    class RefusesUpdates(NoScan):
        def update_item(self, **request: Any) -> Any:
            raise ClientError(
                {"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}},
                "UpdateItem",
            )

    reviews = ReviewService(
        settings(1.0), s3=env.s3, dynamodb=RefusesUpdates(env.dynamodb), clock=lambda: NOW
    )
    response = web(reviews).get("/api/queue")
    assert response.status_code == 200, response.text
    body = response.json()
    assert [i["record_id"] for i in body["items"]] == [waiting]
    assert body["newly_sampled"] == 0 and "not allowed" in body["sampling_error"]
    # Allowed again, the same load draws them (a share of 1 draws every one).
    body = web(service(env, 1.0)).get("/api/queue").json()
    assert body["newly_sampled"] == 3 and body["sampling_error"] is None
    assert {i["record_id"] for i in body["items"]} == {waiting, *accepted}


def test_an_unreadable_records_key_is_shown_as_the_page_shows_keys(env: Env) -> None:
    """A key that turns its text around, in a record the readers leave out, was put into the
    page's header as it was: everything after it read backwards."""
    key = f"{BUCKET}/incoming/photo\u202egnp.exe#v1"
    env.table.put_item(
        Item={"pk": key, "status": "NEEDS_REVIEW", "recorded_at": format_millis(NOW)}
    )
    response = web(service(env)).get("/api/queue")
    assert response.status_code == 200, response.text
    (bad,) = response.json()["unreadable"]
    assert bad["pk"] == f"{BUCKET}/incoming/photo\\u202egnp.exe#v1"
    assert all("\u202e" not in problem for problem in bad["problems"])


def test_records_whose_uploads_have_expired_leave_the_queue_and_are_counted(env: Env) -> None:
    """With UploadRetentionDays the lifecycle rule deletes uploads: a record older than that
    has no image to show or copy, so it is counted, not listed first in the queue."""
    recent = env.record("NEEDS_REVIEW", age=timedelta(days=2))
    env.record("NEEDS_REVIEW", age=timedelta(days=9))
    env.record("NEEDS_REVIEW", age=timedelta(days=30))
    # Recorded recently (a replay) but uploaded before the cutoff: its image is gone too.
    replayed = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    env.table.update_item(
        Key={"pk": replayed},
        UpdateExpression="SET event_time = :t",
        ExpressionAttributeValues={":t": format_millis(NOW - timedelta(days=8))},
    )
    kept = dataclasses.replace(settings(), upload_retention=timedelta(days=7))
    reviews = ReviewService(kept, s3=env.s3, dynamodb=NoScan(env.dynamodb), clock=lambda: NOW)
    assert [i.record_id for i in reviews.queue().items] == [recent]
    assert reviews.expired_waiting() == 2
    assert reviews.expired_waiting(cap=1) == 1  # a backlog that never shrinks is not read whole
    assert service(env).expired_waiting() == 0 and len(service(env).queue().items) == 4
    # A page's worth of such replays recorded before the kept record must not hide it:
    # they are left out as the index is read, not after the first ``limit`` are taken.
    backfilled = env.record("NEEDS_REVIEW", age=timedelta(days=3))
    env.table.update_item(
        Key={"pk": backfilled},
        UpdateExpression="SET event_time = :t",
        ExpressionAttributeValues={":t": format_millis(NOW - timedelta(days=8))},
    )
    assert [i.record_id for i in reviews.queue(limit=1).items] == [recent]
    with pytest.raises(ReviewError, match="not positive"):
        dataclasses.replace(settings(), upload_retention=timedelta(0))

    from scones.review.target import ReviewTarget, TargetError

    older_stack = {k: v for k, v in parameter_defaults().items() if k != "UploadRetentionDays"}

    def retention(**value: str) -> timedelta | None:
        target = ReviewTarget("s", BUCKET, TABLE, "incoming/", {**older_stack, **value})
        return target.settings(sample_share=0.0, sample_days=1).upload_retention

    assert retention(UploadRetentionDays="7") == timedelta(days=7)
    assert retention(UploadRetentionDays="0") is None and retention() is None
    with pytest.raises(TargetError, match="UploadRetentionDays 'x'"):
        retention(UploadRetentionDays="x")


def test_an_upload_stays_in_the_queue_until_the_midnight_s3_expires_it(env: Env) -> None:
    """S3 expires an object at the first midnight UTC at least UploadRetentionDays after
    its creation: at 13:00, with 7 days, an upload of 7 days and 6 hours ago is still
    there (until tonight), one created before midnight 8 days ago is not."""
    assert (NOW.hour, NOW.minute) == (13, 0)
    still_there = env.record("NEEDS_REVIEW", age=timedelta(days=7, hours=6))
    env.record("NEEDS_REVIEW", age=timedelta(days=7, hours=14))  # before midnight
    kept = dataclasses.replace(settings(), upload_retention=timedelta(days=7))
    reviews = ReviewService(kept, s3=env.s3, dynamodb=NoScan(env.dynamodb), clock=lambda: NOW)
    assert [i.record_id for i in reviews.queue().items] == [still_there]
    assert reviews.expired_waiting() == 1


def test_the_image_shown_is_the_exact_version_the_model_saw(env: Env) -> None:
    record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    env.upload(MOTO_IMG, env.get(record_id)["key"])  # the key is overwritten later
    image = shown(service(env).display_image(record_id))
    with Image.open(BIKE) as bike:
        assert image.size == bike.size == (32, 32)  # a thumbnail-sized upload is not enlarged
        assert image.tobytes() == bike.convert("RGB").tobytes()


def test_a_camera_photo_is_shown_upright_and_small_and_a_tiff_as_a_png(env: Env) -> None:
    """A 4000x3000 JPEG stored sideways (EXIF orientation 6) comes back as a 192x256 PNG
    upright, not as 5 MB of JPEG; a TIFF, which browsers do not show, comes back as PNG."""
    photo = Image.new("RGB", (4000, 3000), (30, 90, 200))
    photo.paste((250, 20, 20), (0, 0, 400, 3000))  # red band on the stored image's left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view: the left band goes to the top
    stored = io.BytesIO()
    photo.save(stored, format="JPEG", quality=90, exif=exif)
    record_id = env.record(
        "NEEDS_REVIEW", age=timedelta(hours=1), data=stored.getvalue(), suffix=".jpg"
    )
    image = shown(service(env).display_image(record_id))
    assert image.size == (192, 256)
    red, blue = image.getpixel((96, 5)), image.getpixel((96, 250))
    assert red[0] > 200 and red[2] < 60, red
    assert blue[2] > 150 and blue[0] < 80, blue

    tiff = io.BytesIO()
    with Image.open(MOTO_IMG) as moto:
        moto.save(tiff, format="TIFF")
        expected = moto.convert("RGB").tobytes()
    tiff_record = env.record(
        "NEEDS_REVIEW", age=timedelta(hours=1), data=tiff.getvalue(), suffix=".tiff"
    )
    assert shown(service(env).display_image(tiff_record)).tobytes() == expected


def test_only_images_waiting_for_review_are_shown(env: Env) -> None:
    waiting = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    sampled = env.record("ACCEPTED", age=timedelta(hours=1), review_sampled=True)
    answered = env.record("REVIEWED", age=timedelta(hours=1), review_label="bicycle")
    for record_id in (waiting, sampled, answered):
        assert shown(service(env).display_image(record_id)).size == (32, 32)
    for status in ("ACCEPTED", "REJECTED", "FAILED"):
        other = env.record(status, age=timedelta(hours=1))
        with pytest.raises(ImageNotShown, match=f"is {status}, not an image waiting for review"):
            service(env).display_image(other)
    with pytest.raises(ImageNotShown, match="has no record"):
        service(env).display_image(f"{BUCKET}/incoming/none.png#v1")
    unset = ReviewService(
        dataclasses.replace(settings(), image_limits=None), s3=env.s3, dynamodb=env.dynamodb
    )
    with pytest.raises(ImageNotShown, match="without the stack's image rules"):
        unset.display_image(waiting)


def test_answer_marks_the_record_copies_the_version_and_appends_the_manifest(env: Env) -> None:
    record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    key = env.get(record_id)["key"]
    env.upload(MOTO_IMG, key)  # a newer version of the same key must not be the one copied
    result = service(env).answer(
        record_id, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="ana"
    )
    record = env.get(record_id)
    assert record["status"] == Status.REVIEWED
    assert record["review_label"] == "bicycle"
    assert record["reviewer"] == "ana"
    assert record["classified_status"] == "NEEDS_REVIEW"
    assert record["reviewed_at"] == format_millis(NOW)
    assert result.labelled_key is not None
    assert result.labelled_key.startswith("labelled/bicycle/")
    assert result.labelled_key.endswith(".png")
    copy = env.s3.get_object(Bucket=BUCKET, Key=result.labelled_key)
    assert copy["Body"].read() == BIKE.read_bytes()
    assert copy["ContentType"] == "image/png"
    manifest = service(env).read_manifest()
    assert len(manifest) == 1
    assert manifest[0]["record_id"] == record_id
    assert manifest[0]["path"] == result.labelled_key.removeprefix("labelled/")
    assert manifest[0]["class_index"] == 0


def test_a_label_beyond_ascii_is_copied_for_training(env: Env) -> None:
    """S3 keeps user metadata as US-ASCII: botocore refused the copy of an answer 'vélo'
    every time, after the answer was saved, so the image never reached training."""
    record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    french = dataclasses.replace(settings(), labels=("vélo", "moto"))
    reviews = ReviewService(french, s3=env.s3, dynamodb=NoScan(env.dynamodb), clock=lambda: NOW)
    result = reviews.answer(
        record_id, expected_status="NEEDS_REVIEW", answer="vélo", reviewer="ana"
    )
    assert result.labelled_key is not None and result.labelled_key.startswith("labelled/vélo/")
    copy = env.s3.head_object(Bucket=BUCKET, Key=result.labelled_key)
    assert copy["Metadata"]["label"] == "v%C3%A9lo"
    (line,) = reviews.read_manifest()
    assert line["label"] == "vélo" and line["class_index"] == 0


def test_neither_is_recorded_but_not_copied(env: Env) -> None:
    record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    result = service(env).answer(
        record_id, expected_status="NEEDS_REVIEW", answer=NEITHER, reviewer="ana"
    )
    assert result.labelled_key is None
    assert env.get(record_id)["review_label"] == NEITHER
    listed = env.s3.list_objects_v2(Bucket=BUCKET, Prefix="labelled/").get("Contents", [])
    # The manifest of the day the upload was recorded (an hour before NOW).
    assert [o["Key"] for o in listed] == [
        f"labelled/manifest-{(NOW - timedelta(hours=1)):%Y-%m-%d}.jsonl"
    ]
    (line,) = service(env).read_manifest()
    assert line["label"] == NEITHER and line["path"] is None and line["class_index"] is None


def test_two_reviewers_cannot_overwrite_each_other(env: Env) -> None:
    record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    service(env).answer(record_id, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="a")
    with pytest.raises(ReviewConflict, match="already reviewed as 'bicycle' by a"):
        service(env).answer(
            record_id, expected_status="NEEDS_REVIEW", answer="motorcycle", reviewer="b"
        )
    assert env.get(record_id)["review_label"] == "bicycle"
    # The first reviewer's retry completes without a second manifest line.
    service(env).answer(record_id, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="a")
    assert len(service(env).read_manifest()) == 1


class ManifestWrites:
    """An S3 client that notes the manifest objects each answer writes."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.written: list[tuple[str, int]] = []  # (key, lines)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def put_object(self, **kwargs: Any) -> Any:
        if "/manifest" in kwargs["Key"]:
            self.written.append((kwargs["Key"], kwargs["Body"].count(b"\n")))
        return self._client.put_object(**kwargs)


def test_an_answer_rewrites_only_the_manifest_of_its_uploads_day(env: Env) -> None:
    """The manifest was one object that every answer read and rewrote whole, so after a
    year of answers each one moved every line ever written. Now each day's uploads have
    their own manifest, and a resent answer still finds its line there."""
    days_ago = env.record("NEEDS_REVIEW", age=timedelta(days=2))
    today = env.record("NEEDS_REVIEW", age=timedelta(minutes=5))
    s3 = ManifestWrites(env.s3)
    reviews = ReviewService(settings(), s3=s3, dynamodb=NoScan(env.dynamodb), clock=lambda: NOW)
    for record_id in (days_ago, today, today):  # the last one resent
        result = reviews.answer(
            record_id, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="ana"
        )
    older = f"labelled/manifest-{NOW - timedelta(days=2):%Y-%m-%d}.jsonl"
    newer = f"labelled/manifest-{NOW - timedelta(minutes=5):%Y-%m-%d}.jsonl"
    assert older != newer and result.manifest_key == newer
    assert s3.written == [(older, 1), (newer, 1)]
    assert [line["record_id"] for line in reviews.read_manifest()] == [days_ago, today]


def test_the_earlier_single_manifest_is_still_read_and_never_duplicated(env: Env) -> None:
    """Stacks reviewed before one manifest per day have labelled/manifest.jsonl: its
    answers stay listed, and an answer held then and resent now gets no second line."""
    earlier = env.record("NEEDS_REVIEW", age=timedelta(days=3))
    resent = env.record("NEEDS_REVIEW", age=timedelta(hours=2))
    lines = [{"record_id": earlier, "label": "motorcycle"}, {"record_id": resent}]
    body = "".join(json.dumps(line) + "\n" for line in lines)
    env.s3.put_object(Bucket=BUCKET, Key="labelled/manifest.jsonl", Body=body.encode())
    s3 = ManifestWrites(env.s3)
    reviews = ReviewService(settings(), s3=s3, dynamodb=NoScan(env.dynamodb), clock=lambda: NOW)
    reviews.answer(resent, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="ana")
    assert s3.written == []
    assert [line["record_id"] for line in reviews.read_manifest()] == [earlier, resent]


def test_an_accepted_record_is_reviewable_only_when_sampled(env: Env) -> None:
    plain = env.record("ACCEPTED", age=timedelta(hours=1))
    with pytest.raises(ReviewConflict):
        service(env).answer(plain, expected_status="ACCEPTED", answer="bicycle", reviewer="a")
    assert env.get(plain)["status"] == "ACCEPTED"
    sampled = env.record("ACCEPTED", age=timedelta(hours=1), review_sampled=True)
    service(env).answer(sampled, expected_status="ACCEPTED", answer="motorcycle", reviewer="a")
    record = env.get(sampled)
    assert record["status"] == "REVIEWED" and record["classified_status"] == "ACCEPTED"
    # A stale page that still believes the record is waiting cannot answer it again.
    with pytest.raises(ReviewConflict):
        service(env).answer(sampled, expected_status="ACCEPTED", answer="bicycle", reviewer="b")


def test_bad_answers_are_refused(env: Env) -> None:
    record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    for kwargs, message in [
        ({"answer": "car", "expected_status": "NEEDS_REVIEW"}, "not one of"),
        ({"answer": "bicycle", "expected_status": "REJECTED"}, "cannot be reviewed"),
    ]:
        with pytest.raises(ReviewError, match=message):
            service(env).answer(record_id, reviewer="a", **kwargs)
    with pytest.raises(ReviewError, match="no record"):
        service(env).answer("nope", expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="a")


def test_sampling_is_a_stable_share_of_recent_accepted_records(env: Env) -> None:
    ids = [f"{BUCKET}/incoming/{i}.png#v" for i in range(4000)]
    drawn = [i for i in ids if drawn_for_review(i, 0.05)]
    assert 0.04 < len(drawn) / len(ids) < 0.06
    assert drawn == [i for i in ids if drawn_for_review(i, 0.05)]
    assert not any(drawn_for_review(i, 0.0) for i in ids[:100])
    assert all(drawn_for_review(i, 1.0) for i in ids[:100])

    recent = [env.record("ACCEPTED", age=timedelta(hours=1)) for _ in range(40)]
    old = env.record("ACCEPTED", age=timedelta(days=3))
    reviewer = service(env, share=0.25)
    flagged = reviewer.sample_accepted()
    expected = {r for r in recent if drawn_for_review(r, 0.25)}
    assert flagged == len(expected) > 0
    assert {r for r in recent if env.get(r).get("review_sampled")} == expected
    assert "review_sampled" not in env.get(old)
    assert reviewer.sample_accepted() == 0  # already drawn
    assert {i.record_id for i in reviewer.queue().items} == expected


def test_manifest_appends_survive_a_concurrent_writer(env: Env) -> None:
    first = env.record("NEEDS_REVIEW", age=timedelta(hours=2))
    second = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    racing = service(env)
    other = service(env)
    real_read = racing._read
    interleaved = []

    def read_then_someone_writes(key: str) -> tuple[bytes, str | None]:
        body_and_etag = real_read(key)
        if not interleaved:
            interleaved.append(True)
            other.answer(second, expected_status="NEEDS_REVIEW", answer="motorcycle", reviewer="b")
        return body_and_etag

    racing._read = read_then_someone_writes  # type: ignore[method-assign]
    racing.answer(first, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="a")
    lines = service(env).read_manifest()
    assert sorted(line["record_id"] for line in lines) == sorted([first, second])


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """The bucket and table in moto's server as the offline stack runs it (its threads, its
    locks): answers race there as they do on the stack, where ``mock_aws`` runs each call
    in its caller's thread."""
    from scones.offline import concurrency_fixes
    from scones.offline.moto_guard import guarded_moto_server

    moto = guarded_moto_server("127.0.0.1", 0)
    moto.start()
    concurrency_fixes.install()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "offline",
        "AWS_SECRET_ACCESS_KEY": "offline",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    reset = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    try:
        urllib.request.urlopen(reset, timeout=10).close()
        pool = Config(max_pool_connections=50)
        s3 = boto3.client("s3", region_name=REGION, config=pool)
        dynamodb = boto3.client("dynamodb", region_name=REGION, config=pool)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        dynamodb.create_table(TableName=TABLE, **table_definition("ResultsTable"))
        yield Env(s3, dynamodb)
    finally:
        urllib.request.urlopen(reset, timeout=10).close()
        concurrency_fixes.uninstall()
        moto.stop()


def test_answers_given_together_all_reach_their_days_manifest(served: Env) -> None:
    """20 answers to uploads of one day, given at once, each rewrite that day's manifest:
    retried at once they kept colliding, and some used up their attempts (the page said
    502, "kept changing"). With a jittered wait between attempts every one is listed."""
    records = [served.record("NEEDS_REVIEW", age=timedelta(minutes=n)) for n in range(20)]
    reviews = service(served)
    barrier = threading.Barrier(len(records))
    failed: list[str] = []

    def answer(record_id: str) -> None:
        barrier.wait()
        try:
            reviews.answer(
                record_id, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="ana"
            )
        except Exception as exc:
            failed.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=answer, args=(r,)) for r in records]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failed == []
    lines = reviews.read_manifest()
    assert sorted(line["record_id"] for line in lines) == sorted(records)
    manifests = served.s3.list_objects_v2(Bucket=BUCKET, Prefix="labelled/manifest-")
    assert [o["Key"] for o in manifests["Contents"]] == [f"labelled/manifest-{NOW:%Y-%m-%d}.jsonl"]


# Lines a person or another tool may leave in a day's manifest: none is an answer's line.
NOT_OBJECTS = [b"{truncated", b"[1,2]", b'"bicycle"', b"7"]
NOT_UTF8 = b'{"record_id": "\xff"}'


def _manifest_with_unreadable_lines(env: Env, key: str, unreadable: list[bytes]) -> list[bytes]:
    """The day's manifest: another record's answer, then ``unreadable`` (a blank line
    among them); its non-blank lines, as stored."""
    lines = [b'{"label":"bicycle","record_id":"another"}', *unreadable]
    body = b"\n".join(lines[:2]) + b"\n\n" + b"\n".join(lines[2:]) + b"\n"
    env.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return lines


def _unreadable_lines_named(caplog: pytest.LogCaptureFixture, key: str) -> set[int]:
    """The line numbers of ``key`` that warnings named as no answer's line."""
    named = set()
    for entry in caplog.records:
        found = re.fullmatch(
            rf"s3://{BUCKET}/{re.escape(key)} line (\d+) is no answer's .*", entry.getMessage()
        )
        if found and entry.levelname == "WARNING":
            named.add(int(found[1]))
    return named


def test_a_manifest_line_that_is_no_answer_never_blocks_the_days_answers(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """One line that is not a JSON object in a day's manifest made every answer of that
    day fail (502, the answer held for good: sending it again read the same line), with a
    message naming neither the file nor the line. Such a line is no record's: the answer
    is finished, the line kept as it was, and the server's log names file and line."""
    record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=3))
    reviews = service(env)
    key = reviews.settings.manifest_key(env.get(record_id)["recorded_at"])
    lines = _manifest_with_unreadable_lines(env, key, [*NOT_OBJECTS, NOT_UTF8])
    body = {"record_id": record_id, "expected_status": "NEEDS_REVIEW", "answer": "bicycle"}
    with caplog.at_level("WARNING", logger="scones_core.review"):
        response = web(reviews).post("/api/answers", json=body)
    assert response.status_code == 200, response.text
    # Lines 2 and 4 to 7 (line 3 is blank), each named where the reviewer's server logs.
    assert _unreadable_lines_named(caplog, key) == {2, 4, 5, 6, 7}
    assert response.json()["manifest_key"] == key
    record = env.get(record_id)
    assert (record["status"], record["review_label"], record["reviewer"]) == (
        "REVIEWED",
        "bicycle",
        "ana",
    )
    stored = env.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().split(b"\n")
    assert stored[:-2] == lines and stored[-1] == b""  # every line kept, byte for byte
    assert json.loads(stored[-2])["record_id"] == record_id
    assert [line["record_id"] for line in reviews.read_manifest()] == ["another", record_id]


def test_a_takeover_removes_the_abandoned_line_and_keeps_lines_that_are_no_answer(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """Taking over an expired hold rewrites the day's manifest without the abandoned
    answer's line: an unreadable line there is kept, not a reason to refuse the answer."""
    record_id = _abandoned_hold(env)
    key = settings().manifest_key(env.get(record_id)["recorded_at"])
    abandoned = env.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert json.loads(abandoned)["reviewer"] == "ana"
    lines = _manifest_with_unreadable_lines(env, key, NOT_OBJECTS)
    env.s3.put_object(Bucket=BUCKET, Key=key, Body=abandoned + b"\n".join(lines) + b"\n")
    bo = TestClient(app_for(_at(env, LATER), reviewer="bo"), headers=WITH_TOKEN)
    body = {"record_id": record_id, "expected_status": "NEEDS_REVIEW", "answer": "motorcycle"}
    with caplog.at_level("WARNING", logger="scones_core.review"):
        response = bo.post("/api/answers", json=body)
    assert response.status_code == 200, response.text
    assert (env.get(record_id)["status"], env.get(record_id)["reviewer"]) == ("REVIEWED", "bo")
    stored = env.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().split(b"\n")
    assert stored[:-2] == lines  # ana's line removed, every other line as it was
    assert (json.loads(stored[-2])["reviewer"], json.loads(stored[-2])["label"]) == (
        "bo",
        "motorcycle",
    )
    assert _unreadable_lines_named(caplog, key) >= {3, 4, 5, 6}


def test_web_api_answers_and_refuses_other_hosts_and_origins(env: Env) -> None:
    record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    client = web(service(env))
    assert 'id="queue"' in client.get("/").text
    queue = client.get("/api/queue").json()
    assert [i["record_id"] for i in queue["items"]] == [record_id]
    assert queue["expired"] == 0  # uploads are kept forever: nothing has expired
    assert queue["expired_cap"] == 10_000
    assert queue["items"][0]["image_url"] == "api/image?record_id=" + quote(record_id, safe="")
    image = client.get("/" + queue["items"][0]["image_url"])
    assert image.status_code == 200, image.text
    assert image.headers["content-type"] == "image/png"
    assert image.headers["x-content-type-options"] == "nosniff"
    # A customer's photo is kept by no cache, the reviewer's browser's disk cache included.
    assert image.headers["cache-control"] == "no-store"
    assert shown(image.content).size == (32, 32)
    body = {"record_id": record_id, "expected_status": "NEEDS_REVIEW", "answer": "motorcycle"}
    assert (
        client.post("/api/answers", json=body, headers={"Origin": "http://evil"}).status_code == 403
    )
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 400
    response = client.post("/api/answers", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["review_label"] == "motorcycle"
    again = client.post("/api/answers", json=body | {"answer": "bicycle"})
    assert again.status_code == 409 and "already reviewed" in again.json()["detail"]
    bad = client.post("/api/answers", json=body | {"answer": "car"})
    assert bad.status_code == 400
    assert client.get("/api/queue").json()["items"] == []
    assert json.loads(json.dumps(queue))  # JSON-safe


@pytest.mark.parametrize(
    ("given", "served"),
    [
        ("VM", "vm"),
        ("Review.Example", "review.example"),
        ("FD00::2", "fd00::2"),
        ("fd00:0:0::2", "fd00::2"),
        ("[FD00::2]", "fd00::2"),
        ("192.0.2.002", "192.0.2.2"),
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("cafe", "cafe"),
    ],
)
def test_review_serves_the_host_as_a_browser_spells_it(given: str, served: str) -> None:
    """`--host VM` printed http://VM:port/, which a browser opens as http://vm:port/; the
    page answered only "VM", so every request of the page it printed was refused."""
    from scones.cli.review import served_host

    assert served_host(given) == served


def test_an_answer_is_not_kept_when_its_image_is_gone(env: Env) -> None:
    """A record must never be REVIEWED with a label whose image cannot become training
    data: the source version (expired by a lifecycle rule) is checked first."""
    record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    record = env.get(record_id)
    env.s3.delete_object(Bucket=BUCKET, Key=record["key"], VersionId=record["version_id"])
    reviews = service(env)
    with pytest.raises(ReviewError, match="no longer in the bucket"):
        reviews.answer(record_id, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="ana")
    assert env.get(record_id)["status"] == "NEEDS_REVIEW"
    listed = env.s3.list_objects_v2(Bucket=BUCKET, Prefix=settings().labelled_prefix)
    assert listed.get("KeyCount", 0) == 0
    # Nor "neither": nobody can have seen the image, and it would count as the model's
    # mistake in the monitor's accuracy.
    with pytest.raises(ReviewError, match="no longer in the bucket"):
        reviews.answer(record_id, expected_status="NEEDS_REVIEW", answer="neither", reviewer="ana")
    assert env.get(record_id)["status"] == "NEEDS_REVIEW"


def test_records_whose_image_a_page_found_gone_no_longer_fill_the_queue(env: Env) -> None:
    """Uploads deleted or overwritten outside the retention rule (a noncurrent version's
    expiry, a person's delete): once a page asks for such an image, its record leaves the
    queue, so a page's worth of them cannot keep every newer image from being shown."""
    gone = [env.record("NEEDS_REVIEW", age=timedelta(hours=10 - i)) for i in range(3)]
    answered = env.record("NEEDS_REVIEW", age=timedelta(hours=5))
    live = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    reviews = service(env)
    reviews.answer(answered, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="ana")
    for record_id in [*gone, answered]:
        record = env.get(record_id)
        env.s3.delete_object(Bucket=BUCKET, Key=record["key"], VersionId=record["version_id"])
    assert [i.record_id for i in reviews.queue(limit=3).items] == gone  # not yet known to be gone

    for record_id in gone:
        with pytest.raises(ObjectNotFound):
            reviews.read_for_display(record_id)
    # A REVIEWED record's image is shown to a page loaded before the answer; never marked.
    with pytest.raises(ObjectNotFound):
        reviews.read_for_display(answered)
    assert "image_gone_at" not in env.get(answered)
    assert {env.get(r)["image_gone_at"] for r in gone} == {format_millis(NOW)}
    assert {env.get(r)["status"] for r in gone} == {"NEEDS_REVIEW"}
    assert [i.record_id for i in reviews.queue(limit=3).items] == [live]

    # Through the page: the image is 410, and the record is gone from the next queue.
    late = env.record("NEEDS_REVIEW", age=timedelta(hours=12))
    record = env.get(late)
    env.s3.delete_object(Bucket=BUCKET, Key=record["key"], VersionId=record["version_id"])
    client = web(reviews)
    queue = client.get("/api/queue").json()
    assert [item["record_id"] for item in queue["items"]] == [late, live]
    assert client.get(queue["items"][0]["image_url"]).status_code == 410
    assert [item["record_id"] for item in client.get("/api/queue").json()["items"]] == [live]


def test_copy_names_take_only_a_plain_suffix_from_the_key() -> None:
    from scones_core.review import labelled_name

    assert labelled_name("r", "TIFF", "scan.png").endswith(".tiff")
    assert labelled_name("r", None, "photo.JPEG").endswith(".jpeg")
    assert labelled_name("r", None, "x.\n7\t1\tevil").endswith(".img")
    assert labelled_name("r", None, "no-suffix").endswith(".img")


def test_the_queue_reads_no_further_than_its_limit(env: Env) -> None:
    for hours in range(12):
        env.record("NEEDS_REVIEW", age=timedelta(hours=12 - hours))
    read: list[int] = []
    client = env.dynamodb
    original = client.query

    def counting(**kwargs: Any) -> Any:
        response = original(**kwargs)
        read.append(len(response.get("Items", [])))
        return response

    client.query = counting  # type: ignore[method-assign]
    queue = service(env).queue(limit=3)
    items = queue.items
    # One page of four, not all twelve: three shown, and one that tells that more wait.
    assert sum(read) == 4 and queue.more
    assert items[0].event_time == format_millis(NOW - timedelta(hours=12))  # oldest first
    assert [item.event_time for item in items] == sorted(item.event_time for item in items)


class FailingS3:
    """An S3 client whose ``operation`` fails as S3 does under load; the rest is real."""

    def __init__(self, s3: Any, operation: str = "copy_object") -> None:
        self._s3, self._operation = s3, operation

    def __getattr__(self, name: str) -> Any:
        if name != self._operation:
            return getattr(self._s3, name)

        def fail(**kwargs: Any) -> Any:
            from botocore.exceptions import ClientError

            error = {"Code": "InternalError", "Message": "We encountered an internal error"}
            raise ClientError({"Error": error}, self._s3.meta.method_to_api_mapping[name])

        return fail


def test_web_api_limits_requests_refuses_framing_and_names_aws_failures(env: Env) -> None:
    record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    hosts = LOOPBACK_HOSTS | {"testserver"}

    def client_for(s3: Any) -> TestClient:
        reviews = ReviewService(settings(), s3=s3, dynamodb=NoScan(env.dynamodb), clock=lambda: NOW)
        return TestClient(
            app_for(reviews, hosts), headers=WITH_TOKEN, raise_server_exceptions=False
        )

    client = client_for(env.s3)
    page = client.get("/")
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    body = {"record_id": record_id, "expected_status": "NEEDS_REVIEW", "answer": "motorcycle"}
    assert client.post("/api/answers", json=body | {"record_id": ""}).status_code == 422
    huge = json.dumps(body | {"record_id": "x" * 100_000})
    headers = {"Content-Type": "application/json"}
    assert client.post("/api/answers", content=huge, headers=headers).status_code == 413
    # S3 failing under the answer is a JSON error the page shows; the retry completes it.
    failed = client_for(FailingS3(env.s3)).post("/api/answers", json=body)
    assert failed.status_code == 502
    # The answer itself is held: the message says so, and how to finish it.
    assert failed.json()["detail"].startswith("the answer 'motorcycle' is held, but its")
    assert "InternalError" in failed.text and "until the same answer is sent again" in failed.text
    # Not REVIEWED before its copy is written: it stays in every page's queue (it used to
    # leave the queue at once, so a reload lost the one way to finish it), and nobody
    # else can answer it meanwhile.
    assert env.get(record_id)["status"] == "NEEDS_REVIEW"
    assert record_id in [i["record_id"] for i in client.get("/api/queue").json()["items"]]
    with pytest.raises(ReviewConflict, match="is being answered as 'motorcycle' by ana"):
        service(env).answer(
            record_id, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="bo"
        )
    retried = client.post("/api/answers", json=body)
    assert retried.status_code == 200, retried.text
    assert env.s3.head_object(Bucket=BUCKET, Key=retried.json()["labelled_key"])
    assert env.get(record_id)["status"] == "REVIEWED"
    assert [line["record_id"] for line in service(env).read_manifest()] == [record_id]


# The policy the page must be served under: nothing by default, and only the page's own
# files, images and API (no inline script or style, no other origin, no framing, no
# markup written from text).
STRICT_POLICY = {
    "default-src": ["'none'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'"],
    "connect-src": ["'self'"],
    "form-action": ["'self'"],
    "base-uri": ["'none'"],
    "frame-ancestors": ["'none'"],
    "require-trusted-types-for": ["'script'"],
    "trusted-types": ["'none'"],
}
COMPANION_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "cache-control": "no-store",
}


def policy(response: Any) -> dict[str, list[str]]:
    """A response's Content-Security-Policy as directive -> sources."""
    directives = [d.split() for d in response.headers["content-security-policy"].split(";")]
    return {d[0]: d[1:] for d in directives if d}


class _Markup(HTMLParser):
    """What in an HTML document would run or style without a file of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []
        self.files: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        self.inline += [f"<{tag} {a}>" for a in named if a.startswith("on") or a == "style"]
        if tag == "style" or (tag == "script" and not named.get("src")):
            self.inline.append(f"<{tag}>")
        if tag == "script" and named.get("src"):
            self.files.append(str(named["src"]))
        if tag == "link" and named.get("rel") == "stylesheet":
            self.files.append(str(named["href"]))
        self._in = tag

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "script" and data.strip():
            self.inline.append("<script> text")


def test_the_page_runs_only_its_own_files_under_a_strict_policy(env: Env) -> None:
    """The page holds no inline script, style or handler, and every answer (the page, its
    files, the API, refusals) carries the strict policy and its companion headers."""
    record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    client = web(service(env))
    page = client.get("/")
    markup = _Markup()
    markup.feed(page.text)
    assert markup.inline == [], "inline script or style would be refused by the policy"
    assert sorted(markup.files) == ["static/review.css", "static/review.js"]
    files = {name: client.get("/" + name) for name in markup.files}
    assert files["static/review.js"].headers["content-type"].startswith("text/javascript")
    assert files["static/review.css"].headers["content-type"].startswith("text/css")
    assert "function renderDetail()" in files["static/review.js"].text
    # The script writes uploaders' text as text: no markup sink anywhere in it.
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in files["static/review.js"].text, sink
    answers = [
        page,
        *files.values(),
        client.get("/api/queue"),
        client.get("/api/image", params={"record_id": record_id}),
        client.get("/api/image", params={"record_id": "nothing-such"}),
        client.get("/api/queue", headers={"Sec-Fetch-Site": "cross-site"}),
        client.get("/", headers={"Host": "evil.example"}),
        client.get("/no-such-page"),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 200, 404, 403, 400, 404]
    for answer in answers:
        assert policy(answer) == STRICT_POLICY, answer.request.url
        for name, value in COMPANION_HEADERS.items():
            assert answer.headers[name] == value, (answer.request.url, name)


@pytest.mark.parametrize(
    ("framing", "status", "named"),
    [
        # Both headers: the chunks, not the small Content-Length, would end the body.
        ("Content-Length: 10\r\nTransfer-Encoding: chunked", 400, "Transfer-Encoding"),
        ("Transfer-Encoding: chunked", 400, "Transfer-Encoding"),
        ("", 411, "Content-Length is required"),
        (f"Content-Length: {MAX_BODY_BYTES + 1}", 413, f"over {MAX_BODY_BYTES} bytes"),
    ],
)
def test_a_body_the_limit_cannot_bound_is_refused_unread_and_the_connection_closed(
    env: Env, framing: str, status: int, named: str
) -> None:
    """Over a real socket: a chunked body of 3 MB behind ``Content-Length: 10`` is refused
    before it is read, the answer is never recorded, and the connection closes, so the
    rest of the body (here a whole second request) is never read as a request."""
    import socket

    from scones.serving.server import ModelServer

    record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    reviews = ReviewService(settings(), s3=env.s3, dynamodb=env.dynamodb, clock=lambda: NOW)
    server = ModelServer(app_for(reviews, LOOPBACK_HOSTS), host="127.0.0.1", port=0)
    server.start()
    answer = json.dumps(
        {"record_id": record_id, "expected_status": "NEEDS_REVIEW", "answer": "motorcycle"}
    )
    body = answer[:-1].encode() + b', "pad": "' + b"A" * 3_000_000 + b'"}'
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 65536]), body[i : i + 65536])
        for i in range(0, len(body), 65536)
    )
    smuggled = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    head = (
        f"POST /api/answers HTTP/1.1\r\nHost: 127.0.0.1\r\n{TOKEN_HEADER}: {TOKEN}\r\n"
        f"Content-Type: application/json\r\n{framing + chr(13) + chr(10) if framing else ''}\r\n"
    ).encode()
    received = bytearray()
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.settimeout(10)
            with contextlib.suppress(OSError):  # the server may close before it has all
                sock.sendall(head + chunks + b"0\r\n\r\n" + smuggled)
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(65536):
                    received += chunk
    finally:
        server.stop()
    status_line, _, rest = bytes(received).partition(b"\r\n")
    assert status_line.split()[1] == str(status).encode(), bytes(received[:400])
    assert named.encode() in rest and b"connection: close" in rest.lower()
    assert received.count(b"HTTP/1.1 ") == 1  # /ping, inside the body, was never answered
    item = env.table.get_item(Key={"pk": record_id})["Item"]
    assert item["status"] == "NEEDS_REVIEW" and "review_label" not in item


def test_the_browser_gets_a_png_the_server_made_never_the_uploaded_bytes(env: Env) -> None:
    """An uploader can store bytes as text/html, or append a page to a valid image: the
    page is only ever sent a PNG that Pillow wrote from the decoded pixels, as image/png."""
    tail = b"<html><script>alert(document.domain)</script></html>"
    record_id = env.record(
        "NEEDS_REVIEW",
        age=timedelta(hours=1),
        data=BIKE.read_bytes() + tail,
        put={"ContentType": "text/html"},
    )
    response = web(service(env)).get("/api/image", params={"record_id": record_id})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert b"<html" not in response.content and b"script" not in response.content
    with Image.open(BIKE) as bike:
        assert shown(response.content).tobytes() == bike.convert("RGB").tobytes()


def test_web_api_image_failures_of_aws_are_502_and_not_echoed(env: Env) -> None:
    """DynamoDB or S3 failing gives a 502 that names no AWS detail (an AccessDenied
    message carries the caller's ARN); an id over DynamoDB's 2048 bytes is no record."""
    from botocore.stub import Stubber

    record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    table = boto3.client("dynamodb", region_name=REGION)
    bucket = boto3.client("s3", region_name=REGION)
    reviews = ReviewService(settings(), s3=bucket, dynamodb=table, clock=lambda: NOW)
    client = web(reviews)
    secret = "User: arn:aws:sts::123456789012:assumed-role/reviewer/ana is not authorized"
    with Stubber(table) as dynamo:
        dynamo.add_client_error(
            "get_item", "ProvisionedThroughputExceededException", "slow down", 400
        )
        throttled = client.get("/api/image", params={"record_id": record_id})
    assert throttled.status_code == 502
    assert throttled.json()["detail"].startswith("the image could not be read (StorageUnavailable)")
    item = env.table.get_item(Key={"pk": record_id})["Item"]
    with Stubber(table) as dynamo, Stubber(bucket) as s3:
        dynamo.add_response(
            "get_item",
            {"Item": env.dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": record_id}})["Item"]},
        )
        s3.add_client_error("get_object", "AccessDenied", secret, 403)
        denied = client.get("/api/image", params={"record_id": record_id})
    assert item["status"] == "NEEDS_REVIEW"
    assert denied.status_code == 502 and "arn:" not in denied.text, denied.text
    assert denied.headers["cache-control"] == "no-store"
    long_id = "\u20ac" * 700  # 700 characters, 2100 UTF-8 bytes
    too_long = client.get("/api/image", params={"record_id": long_id})
    assert too_long.status_code == 404 and "over DynamoDB's 2048 bytes" in too_long.text
    missing = client.get("/api/image")
    assert missing.status_code == 422 and "names no image" in missing.json()["detail"]
    # An answer for such an id is refused as well, before DynamoDB would refuse the key
    # (a ValidationException that would read as the table failing, a 502).
    with Stubber(table):  # no call is expected: any would fail
        answered = client.post(
            "/api/answers",
            json={"record_id": long_id, "expected_status": "NEEDS_REVIEW", "answer": "bicycle"},
        )
    assert answered.status_code == 400 and "over DynamoDB's 2048 bytes" in answered.text


def test_images_are_drawn_in_slots_of_their_own_and_dropped_when_the_browser_left(
    env: Env,
) -> None:
    """Reading and drawing take one of DECODE_SLOTS slots (drawing in threads of its own):
    while both are busy the queue still answers, and a request whose browser gave up while
    it waited is never read nor drawn."""
    import threading

    from scones.review.app import DECODE_SLOTS
    from scones.serving.server import ModelServer

    record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    release = threading.Event()
    drawn: list[str] = []

    read: list[str] = []

    class SlowDrawing(ReviewService):
        def read_for_display(self, record_id: str) -> bytes:
            read.append(record_id)
            return super().read_for_display(record_id)

        def draw_for_display(self, data: bytes) -> bytes:
            drawn.append(threading.current_thread().name)
            release.wait(20)
            return super().draw_for_display(data)

    reviews = SlowDrawing(settings(), s3=env.s3, dynamodb=env.dynamodb, clock=lambda: NOW)
    server = ModelServer(app_for(reviews, LOOPBACK_HOSTS), host="127.0.0.1", port=0)
    url = server.start()
    # As the page asks for an image: the token in its URL.
    image = f"{url}/api/image?record_id={quote(record_id, safe='')}&token={TOKEN}"
    try:
        busy = [
            threading.Thread(target=httpx.get, args=(image,), kwargs={"timeout": 30})
            for _ in range(DECODE_SLOTS)
        ]
        for thread in busy:
            thread.start()
        for _ in range(100):
            if len(drawn) == DECODE_SLOTS:
                break
            threading.Event().wait(0.05)
        assert len(drawn) == DECODE_SLOTS
        assert all(name.startswith("review-image") for name in drawn)
        # Both slots taken: the queue still answers at once.
        assert httpx.get(f"{url}/api/queue", headers=WITH_TOKEN, timeout=5).status_code == 200
        # A third image whose browser gives up while it waits for a slot...
        with pytest.raises(httpx.TimeoutException):
            httpx.get(image, timeout=0.5)
        threading.Event().wait(1.5)  # ...is noticed gone within a poll (every 0.25 s)
        release.set()
        for thread in busy:
            thread.join(20)
        threading.Event().wait(0.5)
        assert len(drawn) == DECODE_SLOTS  # it was never drawn...
        assert len(read) == DECODE_SLOTS  # ...nor read: no more uploads in memory than slots
    finally:
        release.set()
        server.stop()


def test_web_api_image_errors_name_the_problem(env: Env) -> None:
    """Gone (deleted or expired): 410. Not waiting for review: 404. Bytes the image rules
    refuse: 422 with the rule. The page shows no image for them, so takes no answer."""
    gone = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    record = env.get(gone)
    env.s3.delete_object(Bucket=BUCKET, Key=record["key"], VersionId=record["version_id"])
    broken = env.record("NEEDS_REVIEW", age=timedelta(hours=1), data=BIKE.read_bytes()[:200])
    # A record whose fields name another object than its key is not followed.
    forged = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    env.table.update_item(
        Key={"pk": forged},
        UpdateExpression="SET #k = :k",
        ExpressionAttributeNames={"#k": "key"},
        ExpressionAttributeValues={":k": "private/secret.png"},
    )
    rejected = env.record("REJECTED", age=timedelta(hours=1))
    client = web(service(env))

    def get(record_id: str) -> Any:
        return client.get("/api/image", params={"record_id": record_id})

    assert get(gone).status_code == 410 and "is not in the bucket" in get(gone).json()["detail"]
    assert get(rejected).status_code == 404 and "is REJECTED" in get(rejected).json()["detail"]
    assert get(forged).status_code == 404 and "names another object" in get(forged).json()["detail"]
    refused = get(broken)
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("the image cannot be shown: CorruptImage: ")
    assert client.get("/api/image").status_code == 422  # no record_id
    assert client.get("/api/image", params={"record_id": "x" * 2049}).status_code == 422
    # A reason quoting a key that turns its text around shows it as the queue does.
    turned = env.record("NEEDS_REVIEW", age=timedelta(hours=1), suffix="\u202egnp.png")
    record = env.get(turned)
    env.s3.delete_object(Bucket=BUCKET, Key=record["key"], VersionId=record["version_id"])
    detail = get(turned).json()["detail"]
    assert "\u202e" not in detail and "img-" in detail and "\\u202egnp.png" in detail


def test_web_api_refuses_cross_site_reads_and_bodies_it_cannot_echo(env: Env) -> None:
    env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    hosts = LOOPBACK_HOSTS | {"testserver"}
    client = TestClient(
        app_for(service(env), hosts), headers=WITH_TOKEN, raise_server_exceptions=False
    )
    # Another site's <img src=".../api/queue">: the browser marks it cross-site.
    assert client.get("/api/queue", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    same = client.get("/api/queue", headers={"Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200
    assert same.headers["X-Content-Type-Options"] == "nosniff"
    assert same.headers["Cache-Control"] == "no-store"
    # JSON allows a lone surrogate; UTF-8 does not, and FastAPI's own handler echoed it.
    body = '{"record_id": "\\ud800x", "expected_status": 1, "answer": "bicycle"}'
    bad = client.post("/api/answers", content=body, headers={"Content-Type": "application/json"})
    assert bad.status_code == 422
    assert bad.json()["detail"] == (
        "the request is not an answer: record_id: Input should be a valid string, unable to "
        "parse raw data as a unicode string; expected_status: Input should be a valid string"
    )


@pytest.mark.parametrize(
    ("content", "content_type", "status", "detail"),
    [
        (
            b'{"record_id": "\xff"}',
            "application/json",
            400,
            "the answer is not UTF-8 text (byte 15)",
        ),
        (b"[" * 30_000, "application/json", 400, "the answer is not an answer: it nests too deep"),
        (b"1" * 5000, "application/json", 400, "the answer is not JSON: Exceeds the limit"),
        (
            b"{'record_id': 1}",
            "application/json",
            400,
            "the answer is not JSON: Expecting property",
        ),
        (b"[]", "application/json", 422, "the request is not an answer: Input should be a valid"),
        (b'{"record_id": "x"}', "text/plain", 415, "send the answer as application/json, not"),
        (b'{"record_id": "x"}', "", 415, "not 'no type'"),
    ],
)
def test_a_body_that_is_not_an_answer_is_named_for_what_it_is(
    env: Env, content: bytes, content_type: str, status: int, detail: str
) -> None:
    """FastAPI answered these "There was an error parsing the body", or, for a valid answer
    sent as text/plain, a validation error with an empty field name."""
    client = web(service(env))
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/api/answers", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]
    assert ": :" not in response.json()["detail"]


def test_an_answer_whose_body_stops_arriving_is_cut_off(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender with the token that declared 200 bytes and sent 23 held its connection open
    for as long as it liked."""
    from scones.review import app as review_app

    monkeypatch.setattr(review_app, "BODY_TIMEOUT_S", 0.2)
    app = app_for(service(env))
    sent: list[Message] = []
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", b"200"),
        (TOKEN_HEADER.lower().encode(), TOKEN.encode()),
    ]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/api/answers", "raw_path": b"/api/answers",
        "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    chunks = [{"type": "http.request", "body": b'{"record_id": "x", "ex', "more_body": True}]

    async def receive() -> Message:
        if chunks:
            return chunks.pop()
        await asyncio.sleep(3600)  # the rest never comes
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=10))
    start = sent[0]
    assert start["status"] == 408
    assert (b"connection", b"close") in start["headers"]
    assert b"did not arrive within 0.2 s" in sent[1]["body"]


def test_web_api_names_a_queue_aws_cannot_read(env: Env) -> None:
    hosts = LOOPBACK_HOSTS | {"testserver"}
    gone = dataclasses.replace(settings(), table_name="no-such-table")
    reviews = ReviewService(gone, s3=env.s3, dynamodb=env.dynamodb, clock=lambda: NOW)
    client = TestClient(app_for(reviews, hosts), headers=WITH_TOKEN, raise_server_exceptions=False)
    response = client.get("/api/queue")
    assert response.status_code == 502
    assert response.json()["detail"].startswith("the queue could not be read")
    assert "ResourceNotFoundException" in response.json()["detail"]


def test_the_api_wants_the_printed_token(env: Env) -> None:
    record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    client = TestClient(app_for(service(env)))
    assert client.get("/").status_code == 200  # the page holds no data
    refused = client.get("/api/queue")
    assert refused.status_code == 401 and "printed" in refused.json()["detail"]
    assert client.get("/api/queue", headers={TOKEN_HEADER: "guess"}).status_code == 401
    token = WITH_TOKEN
    assert client.get("/api/queue", headers=token).json()["items"][0]["record_id"] == record_id
    # An <img> sends no headers: the image, and only the image, takes the token in its URL.
    image = {"record_id": record_id}
    assert client.get("/api/image", params=image).status_code == 401
    assert client.get("/api/image", params=image | {"token": "guess"}).status_code == 401
    assert client.get("/api/image", params=image | {"token": TOKEN}).status_code == 200
    assert client.get("/api/image", params=image, headers=token).status_code == 200
    assert client.get("/api/queue", params={"token": TOKEN}).status_code == 401
    body = {"record_id": record_id, "expected_status": "NEEDS_REVIEW", "answer": "bicycle"}
    assert client.post("/api/answers", json=body).status_code == 401
    assert client.post("/api/answers", json=body, headers=token).status_code == 200
    with pytest.raises(ValueError, match="needs a token"):
        ReviewAppSettings("ana", TABLE, token="")


@pytest.mark.parametrize(("host", "printed"), [(None, "127.0.0.1"), ("LocalHost", "localhost")])
def test_scones_review_on_loopback_answers_only_the_printed_urls_token(
    env: Env,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    host: str | None,
    printed: str,
) -> None:
    """Loopback is shared by every user of the machine (a shared host, a CI runner): a
    client of another user must neither read the queue and its images nor answer in the
    reviewer's name, where its answers would become training labels."""
    from types import SimpleNamespace

    from scones.cli import review
    from scones.cli.main import main

    record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    outputs = {"ImageBucketName": {"Value": BUCKET}, "ResultsTableName": {"Value": TABLE}}
    template = {"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}}, "Outputs": outputs}
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    cloudformation.create_stack(StackName="scones", TemplateBody=json.dumps(template))
    seen: dict[str, Any] = {}

    def while_served(seconds: float) -> None:
        """The command's wait for Ctrl-C: use the page it printed, then press Ctrl-C."""
        printed = capsys.readouterr().out
        page = re.search(r"review page (\S+)", printed)
        assert page is not None, printed
        url = urlsplit(page.group(1))
        base = f"{url.scheme}://{url.netloc}"
        seen["host"], seen["query"] = url.hostname, parse_qs(url.query)
        body = {"record_id": record_id, "expected_status": "NEEDS_REVIEW", "answer": "bicycle"}
        # Another local user's client, with no token: the page loads, its API does not.
        seen["queue"] = httpx.get(f"{base}/api/queue").status_code
        image = httpx.get(f"{base}/api/image", params={"record_id": record_id})
        seen["image"] = image.status_code
        seen["answer"] = httpx.post(f"{base}/api/answers", json=body).status_code
        # The reviewer's page, opened from the printed URL, sends its token.
        token = {TOKEN_HEADER: seen["query"].get("token", [""])[0]}
        seen["reviewer"] = httpx.get(f"{base}/api/queue", headers=token).status_code
        raise KeyboardInterrupt

    monkeypatch.setattr(review, "time", SimpleNamespace(sleep=while_served))
    arguments = ["--aws", "--stack", "scones", "--region", REGION, "--reviewer", "ana"]
    arguments += ["--host", host] if host else []
    assert main(["review", *arguments, "--port", "0"]) == 0
    assert (seen["queue"], seen["image"], seen["answer"]) == (401, 401, 401), seen
    assert seen["host"] == printed and len(seen["query"]["token"][0]) >= 24, seen
    assert seen["reviewer"] == 200
    assert env.get(record_id)["status"] == "NEEDS_REVIEW"  # no answer was taken


@pytest.mark.parametrize(
    "host",
    [
        "0.0.0.0",
        "::",
        "0",
        "0.0",
        "000.000.000.000",
        "::0",
        "0:0:0:0:0:0:0:0",
        "::ffff:0.0.0.0",
        "",
        # As a URL writes an IPv6 address: the server binds it without the brackets.
        "[::]",
        "[0.0.0.0]",
        "[0:0:0:0:0:0:0:0]",
    ],
)
def test_review_refuses_to_listen_on_every_address(
    host: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from scones.cli.main import main

    assert main(["review", "--host", host]) == 2
    assert "listens on every address" in capsys.readouterr().err


def test_a_retry_that_races_its_own_answer_finishes_it_instead_of_conflicting(env: Env) -> None:
    """The page resent an answer whose first request was still in flight: the record is
    already REVIEWED by this reviewer with this answer when the retry's write is checked."""
    record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    first = service(env).answer(
        record_id, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="ana"
    )
    racing = service(env)
    stale = {**first.record, "status": "NEEDS_REVIEW"}  # what the retry read, before the write
    reads = iter([stale])
    real_get = racing._get
    racing._get = lambda rid: next(reads, None) or real_get(rid)  # type: ignore[method-assign]
    again = racing.answer(
        record_id, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="ana"
    )
    assert again.record["review_label"] == "bicycle"
    assert [line["record_id"] for line in service(env).read_manifest()] == [record_id]
    # Another reviewer in the same race is told who answered first.
    reads = iter([stale])
    racing._get = lambda rid: next(reads, None) or real_get(rid)  # type: ignore[method-assign]
    with pytest.raises(ReviewConflict, match="already reviewed as 'bicycle' by ana"):
        racing.answer(record_id, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="bo")


def test_an_image_overwritten_after_its_answer_was_held_takes_the_answer_back(
    env: Env,
) -> None:
    """Overwritten (unversioned) between the check and the copy: the held answer is taken
    back, so the record is as the workflow left it, and says so."""
    plain = "held-then-overwritten"
    env.s3.create_bucket(Bucket=plain)
    record = env.get(env.record("NEEDS_REVIEW", age=timedelta(hours=1)))
    env.table.delete_item(Key={"pk": record["pk"]})
    etag = env.s3.put_object(Bucket=plain, Key=record["key"], Body=BIKE.read_bytes())["ETag"]
    pk = f"{plain}/{record['key']}#etag:{etag.strip(chr(34))}"
    env.table.put_item(
        Item={
            **record,
            "pk": pk,
            "bucket": plain,
            "version_id": NULL_VERSION,
            "etag": etag.strip('"'),
        }
    )
    racing = ReviewService(  # the unversioned bucket is this review's stack bucket
        dataclasses.replace(settings(), bucket=plain),
        s3=env.s3,
        dynamodb=NoScan(env.dynamodb),
        clock=lambda: NOW,
    )
    real_check = racing._check_source

    def checked_then_overwritten(current: dict[str, Any]) -> None:
        real_check(current)
        env.s3.put_object(Bucket=plain, Key=record["key"], Body=MOTO_IMG.read_bytes())

    racing._check_source = checked_then_overwritten  # type: ignore[method-assign]
    with pytest.raises(ReviewError, match=r"was overwritten since.*; the answer was not kept$"):
        racing.answer(pk, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="ana")
    left = env.get(pk)
    assert left["status"] == "NEEDS_REVIEW"
    assert not {"review_label", "reviewer", "reviewed_at", "labelled_key"} & set(left)


def test_a_held_answer_whose_image_is_gone_is_finished_if_copied_else_taken_back(
    env: Env,
) -> None:
    """The copy (or the manifest line) failed, then the version the model saw was deleted.
    Not copied yet: the hold is taken back, so the record can be answered again (it used
    to stay held, refusing everyone, its holder included; with its image gone, the
    review page then leaves it out). Copied: the copy is what training reads, so the
    retry finishes."""
    held = {}
    for name, failing in (("not-copied", "copy_object"), ("copied", "put_object")):
        record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
        reviews = ReviewService(
            settings(),
            s3=FailingS3(env.s3, failing),
            dynamodb=NoScan(env.dynamodb),
            clock=lambda: NOW,
        )
        with pytest.raises(ReviewIncomplete):
            reviews.answer(
                record_id, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="ana"
            )
        record = env.get(record_id)
        env.s3.delete_object(Bucket=BUCKET, Key=record["key"], VersionId=record["version_id"])
        held[name] = record_id

    with pytest.raises(ReviewError, match=r"no longer in the bucket.*the answer was not kept$"):
        service(env).answer(
            held["not-copied"], expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="ana"
        )
    left = env.get(held["not-copied"])
    assert left["status"] == "NEEDS_REVIEW" and "review_label" not in left
    assert "reviewer" not in left  # not held: nobody's answer is waiting on it

    finished = service(env).answer(
        held["copied"], expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="ana"
    )
    assert finished.record["status"] == "REVIEWED"
    assert env.s3.head_object(Bucket=BUCKET, Key=finished.labelled_key)
    lines = [line["record_id"] for line in service(env).read_manifest()]
    assert lines == [held["copied"]]  # once; the one taken back has no line


class FailingUpdates:
    """A DynamoDB client whose ``update_item`` fails from its ``fail_from``-th call on."""

    def __init__(self, client: Any, fail_from: int) -> None:
        self._client, self._calls, self._fail_from = client, 0, fail_from

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def update_item(self, **kwargs: Any) -> Any:
        self._calls += 1
        if self._calls >= self._fail_from:
            error = {"Code": "InternalServerError", "Message": "internal error"}
            raise ClientError({"Error": error}, "UpdateItem")
        return self._client.update_item(**kwargs)


@pytest.mark.parametrize("left", ["copy only", "copy and manifest line"])
def test_an_abandoned_held_answer_can_be_answered_afresh_after_the_expiry(
    env: Env, left: str
) -> None:
    """A held answer whose reviewer never came back refused everyone else for good. After
    the expiry another reviewer's answer undoes it (its copy and manifest line) and counts."""
    record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    abandoned = ReviewService(
        settings(),
        s3=FailingS3(env.s3, "put_object") if left == "copy only" else env.s3,
        dynamodb=FailingUpdates(env.dynamodb, 2) if left != "copy only" else env.dynamodb,
        clock=lambda: NOW,
    )
    with pytest.raises((ReviewIncomplete, ClientError)):
        abandoned.answer(
            record_id, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="ana"
        )
    held = env.get(record_id)
    assert held["status"] == "NEEDS_REVIEW" and held["reviewer"] == "ana"
    old_copy = held["labelled_key"]
    assert env.s3.head_object(Bucket=BUCKET, Key=old_copy)
    expiry = settings().hold_expiry

    def reviewer_at(when: datetime) -> ReviewService:
        return ReviewService(
            settings(), s3=env.s3, dynamodb=NoScan(env.dynamodb), clock=lambda: when
        )

    early = reviewer_at(NOW + expiry - timedelta(seconds=1))
    with pytest.raises(ReviewConflict, match="held over 30 minutes, it may be answered afresh"):
        early.answer(record_id, expected_status="NEEDS_REVIEW", answer="motorcycle", reviewer="bo")
    later = reviewer_at(NOW + expiry)
    result = later.answer(
        record_id, expected_status="NEEDS_REVIEW", answer="motorcycle", reviewer="bo"
    )
    record = env.get(record_id)
    assert (record["status"], record["review_label"], record["reviewer"]) == (
        "REVIEWED",
        "motorcycle",
        "bo",
    )
    assert result.labelled_key is not None and result.labelled_key.startswith(
        "labelled/motorcycle/"
    )
    with pytest.raises(ClientError):
        env.s3.head_object(Bucket=BUCKET, Key=old_copy)  # the abandoned answer's copy is gone
    (line,) = later.read_manifest()
    assert (line["record_id"], line["label"], line["reviewer"]) == (record_id, "motorcycle", "bo")


class Hooked:
    """A client that runs ``hook(n, kwargs)`` around its ``n``-th call of ``name``:
    before the call, or after it with ``after``."""

    def __init__(
        self,
        client: Any,
        name: str,
        hook: Callable[[int, dict[str, Any]], None],
        *,
        after: bool = False,
    ) -> None:
        self._client, self._name, self._hook, self._after = client, name, hook, after
        self._calls = 0

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._client, name)
        if name != self._name:
            return real

        def call(**kwargs: Any) -> Any:
            self._calls += 1
            if not self._after:
                self._hook(self._calls, kwargs)
            result = real(**kwargs)
            if self._after:
                self._hook(self._calls, kwargs)
            return result

        return call


def _abandoned_hold(env: Env) -> str:
    """ana's 'bicycle' held with its copy and manifest line written, step 3 failed."""
    record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    ana = ReviewService(
        settings(), s3=env.s3, dynamodb=FailingUpdates(env.dynamodb, 2), clock=lambda: NOW
    )
    with pytest.raises(ClientError):
        ana.answer(record_id, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="ana")
    return record_id


def _labelled(env: Env) -> list[str]:
    listed = env.s3.list_objects_v2(Bucket=BUCKET, Prefix="labelled/").get("Contents", [])
    return sorted(o["Key"] for o in listed if "/manifest" not in o["Key"])


LATER = NOW + timedelta(minutes=31)


def _at(env: Env, when: datetime, *, s3: Any = None, dynamodb: Any = None) -> ReviewService:
    tables = dynamodb or NoScan(env.dynamodb)
    return ReviewService(settings(), s3=s3 or env.s3, dynamodb=tables, clock=lambda: when)


@pytest.mark.parametrize("racer", ["ana resends", "cleo takes over"])
def test_a_takeover_that_loses_the_race_undoes_nothing(env: Env, racer: str) -> None:
    """bo saw the hold expired, but the record was finished before bo's claim: bo's
    answer is refused and the finished answer keeps its copy and its line."""
    record_id = _abandoned_hold(env)
    who, label = ("ana", "bicycle") if racer == "ana resends" else ("cleo", "motorcycle")

    def finish_first(call: int, _: dict[str, Any]) -> None:
        if call == 1:
            _at(env, LATER).answer(
                record_id, expected_status="NEEDS_REVIEW", answer=label, reviewer=who
            )

    # Right after bo read the record (and found its hold expired).
    reads = Hooked(NoScan(env.dynamodb), "get_item", finish_first, after=True)
    bo = _at(env, LATER, dynamodb=reads)
    with pytest.raises(ReviewConflict):
        bo.answer(record_id, expected_status="NEEDS_REVIEW", answer="motorcycle", reviewer="bo")
    record = env.get(record_id)
    assert (record["status"], record["reviewer"], record["review_label"]) == (
        "REVIEWED",
        who,
        label,
    )
    assert _labelled(env) == [record["labelled_key"]]
    lines = [(line["reviewer"], line["label"]) for line in bo.read_manifest()]
    assert lines == [(who, label)]


@pytest.mark.parametrize("bo_says", ["motorcycle", "bicycle"])
def test_an_answer_resent_while_its_hold_is_taken_over_leaves_nothing_for_training(
    env: Env, bo_says: str
) -> None:
    """ana resends just as bo takes the expired hold over: ana's copy is made again
    after bo undid the abandoned answer; ana, refused at step 3, removes it herself. When
    both give the same label their copies are one object, which bo's answer keeps."""
    record_id = _abandoned_hold(env)

    def bo_takes_over(_: int, call: dict[str, Any]) -> None:
        if call["Key"].startswith("labelled/"):  # ana is about to look for her copy
            _at(env, LATER).answer(
                record_id, expected_status="NEEDS_REVIEW", answer=bo_says, reviewer="bo"
            )

    ana = _at(env, LATER, s3=Hooked(env.s3, "head_object", bo_takes_over))
    with pytest.raises(ReviewConflict):
        ana.answer(record_id, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="ana")
    record = env.get(record_id)
    assert (record["status"], record["reviewer"]) == ("REVIEWED", "bo")
    assert _labelled(env) == [record["labelled_key"]]
    assert record["labelled_key"].startswith(f"labelled/{bo_says}/")
    lines = [(line["reviewer"], line["label"]) for line in ana.read_manifest()]
    assert lines == [("bo", bo_says)]


class FailsOnce:
    """A client whose first call of ``operation`` fails as S3 does under load."""

    def __init__(self, client: Any, operation: str) -> None:
        self._client, self._operation, self.failed = client, operation, False

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._client, name)
        if name != self._operation or self.failed:
            return call

        def fail(**kwargs: Any) -> Any:
            self.failed = True
            error = {"Code": "InternalError", "Message": "We encountered an internal error"}
            raise ClientError({"Error": error}, self._client.meta.method_to_api_mapping[name])

        return fail


@pytest.mark.parametrize(
    "refused", ["delete_object", "put_object"], ids=["copy-delete", "manifest-rewrite"]
)
def test_a_takeover_whose_undo_failed_is_finished_by_its_resend(env: Env, refused: str) -> None:
    """bo took ana's expired hold over, and S3 refused the undo of ana's answer (deleting
    her copy, or rewriting the manifest without her line). bo's resend goes the ordinary
    way, since the record now holds bo's answer: it leaves ana's line, and her copy,
    nowhere, and writes bo's line, which the resend used to skip beside ana's."""
    record_id = _abandoned_hold(env)
    ana_copy = env.get(record_id)["labelled_key"]
    failing = FailsOnce(env.s3, refused)
    with pytest.raises(ClientError):
        _at(env, LATER, s3=failing).answer(
            record_id, expected_status="NEEDS_REVIEW", answer="motorcycle", reviewer="bo"
        )
    assert failing.failed and env.get(record_id)["reviewer"] == "bo"
    bo = _at(env, LATER)
    bo.answer(record_id, expected_status="NEEDS_REVIEW", answer="motorcycle", reviewer="bo")
    record = env.get(record_id)
    assert (record["status"], record["reviewer"]) == ("REVIEWED", "bo")
    assert _labelled(env) == [record["labelled_key"]] and ana_copy not in _labelled(env)
    assert [(line["reviewer"], line["label"]) for line in bo.read_manifest()] == [
        ("bo", "motorcycle")
    ]


def test_a_resend_outrun_by_a_takeover_leaves_the_takeovers_line_and_copy(env: Env) -> None:
    """ana resends her expired hold; bo takes it over and finishes just before ana reads
    the day's manifest. Who holds the record is asked after that read: ana's resend must
    not take bo's line for an abandoned one and delete it with his copy (nobody would
    send bo's answer again)."""
    record_id = _abandoned_hold(env)
    fired: list[str] = []

    def bo_takes_over(_: int, call: dict[str, Any]) -> None:
        name = call["Key"].rsplit("/", 1)[-1]
        if not fired and name.startswith("manifest-"):  # ana is about to read it
            fired.append(name)
            _at(env, LATER).answer(
                record_id, expected_status="NEEDS_REVIEW", answer="motorcycle", reviewer="bo"
            )

    ana = _at(env, LATER, s3=Hooked(env.s3, "get_object", bo_takes_over))
    with pytest.raises(ReviewConflict):
        ana.answer(record_id, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="ana")
    assert fired
    record = env.get(record_id)
    assert (record["status"], record["reviewer"]) == ("REVIEWED", "bo")
    assert _labelled(env) == [record["labelled_key"]]
    assert [(line["reviewer"], line["label"]) for line in ana.read_manifest()] == [
        ("bo", "motorcycle")
    ]


def test_a_takeover_refused_for_a_vanished_image_leaves_the_hold_to_finish(env: Env) -> None:
    """The upload expired after ana's copy was made: bo cannot answer it (no image to
    copy), so ana's hold and copy stay and her resend finishes it."""
    record_id = _abandoned_hold(env)
    record = env.get(record_id)
    versions = env.s3.list_object_versions(Bucket=BUCKET, Prefix=record["key"])["Versions"]
    for version in versions:
        env.s3.delete_object(Bucket=BUCKET, Key=record["key"], VersionId=version["VersionId"])
    with pytest.raises(ReviewError, match="no longer in the bucket"):
        _at(env, LATER).answer(
            record_id, expected_status="NEEDS_REVIEW", answer="motorcycle", reviewer="bo"
        )
    assert env.get(record_id)["reviewer"] == "ana" and _labelled(env) == [record["labelled_key"]]
    _at(env, LATER).answer(
        record_id, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="ana"
    )
    assert env.get(record_id)["status"] == "REVIEWED"


def test_an_image_deleted_between_the_check_and_the_copy_takes_the_answer_back(
    env: Env,
) -> None:
    """A versioned upload deleted (a lifecycle rule) after the check passed: the copy's
    NoSuchVersion was an "incomplete" answer held for good, though no resend could copy."""
    record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    record = env.get(record_id)
    racing = service(env)
    real_check = racing._check_source

    def checked_then_deleted(current: dict[str, Any]) -> None:
        real_check(current)
        env.s3.delete_object(Bucket=BUCKET, Key=record["key"], VersionId=record["version_id"])

    racing._check_source = checked_then_deleted  # type: ignore[method-assign]
    with pytest.raises(ReviewError, match=r"no longer in the bucket.*; the answer was not kept$"):
        racing.answer(record_id, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="ana")
    left = env.get(record_id)
    assert left["status"] == "NEEDS_REVIEW" and "review_label" not in left
    assert "reviewer" not in left  # not held: nobody's answer is waiting on it


def test_an_answer_counts_from_when_it_became_reviewed(env: Env) -> None:
    """The monitor tallies REVIEWED records by reviewed_at: an answer held at one time and
    finished two hours later counts in the finishing window, not in one measured while it
    was only held."""
    record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    failing = ReviewService(
        settings(), s3=FailingS3(env.s3), dynamodb=NoScan(env.dynamodb), clock=lambda: NOW
    )
    with pytest.raises(ReviewIncomplete):
        failing.answer(record_id, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="a")
    later = NOW + timedelta(hours=2)
    finishing = ReviewService(
        settings(), s3=env.s3, dynamodb=NoScan(env.dynamodb), clock=lambda: later
    )
    finishing.answer(record_id, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="a")
    assert env.get(record_id)["reviewed_at"] == format_millis(later)


def test_a_status_other_than_the_page_showed_says_to_reload(env: Env) -> None:
    record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    with pytest.raises(ReviewConflict, match="is NEEDS_REVIEW, not ACCEPTED as the page showed"):
        service(env).answer(record_id, expected_status="ACCEPTED", answer="bicycle", reviewer="ana")


def test_an_unversioned_image_overwritten_since_is_not_copied_in_its_place(env: Env) -> None:
    """In a bucket without versioning the workflow records version ``null`` and the
    upload's ETag: a key overwritten since then holds another image, which must not
    become a labelled copy under this answer."""
    plain = "uploads-without-versioning"
    env.s3.create_bucket(Bucket=plain)
    unversioned = []
    for _ in range(2):
        record = env.get(env.record("NEEDS_REVIEW", age=timedelta(hours=1)))
        env.table.delete_item(Key={"pk": record["pk"]})
        put = env.s3.put_object(Bucket=plain, Key=record["key"], Body=BIKE.read_bytes())
        etag = put["ETag"].strip('"')
        # As records.py lays out an unversioned upload (ObjectRef version "null").
        pk = f"{plain}/{record['key']}#etag:{etag}"
        env.table.put_item(
            Item={**record, "pk": pk, "bucket": plain, "version_id": NULL_VERSION, "etag": etag}
        )
        unversioned.append(pk)
    kept, changed = unversioned
    env.s3.put_object(Bucket=plain, Key=env.get(changed)["key"], Body=MOTO_IMG.read_bytes())
    # The page's image is read from the stack's bucket, here the unversioned one.
    shows = ReviewService(
        dataclasses.replace(settings(), bucket=plain), s3=env.s3, dynamodb=env.dynamodb
    )
    with Image.open(BIKE) as bike:
        assert shown(shows.display_image(kept)).tobytes() == bike.convert("RGB").tobytes()
    with pytest.raises(ObjectChanged, match="was overwritten before it could be read"):
        shows.display_image(changed)
    # Another stack's review neither shows nor copies it with the reviewer's credentials.
    with pytest.raises(ImageNotShown, match=f"names bucket '{plain}', not the stack's"):
        service(env).display_image(kept)
    with pytest.raises(ReviewError, match=f"names bucket '{plain}', not the stack's; the answer"):
        service(env).answer(kept, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="a")
    assert REVIEW_LABEL_ATTRIBUTE not in env.get(kept)
    assert env.s3.list_objects_v2(Bucket=BUCKET, Prefix="labelled/")["KeyCount"] == 0
    ok = shows.answer(kept, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="a")
    copied = env.s3.get_object(Bucket=plain, Key=ok.labelled_key)["Body"].read()
    assert copied == BIKE.read_bytes()
    with pytest.raises(ReviewError, match="was overwritten since it was classified"):
        shows.answer(changed, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="a")
    assert env.get(changed)["status"] == "NEEDS_REVIEW"  # the answer was not kept
    # Overwritten after its answer was copied: a retry keeps the copy of the image the
    # model saw (it never copies the key's new bytes over it) and finishes.
    env.s3.put_object(Bucket=plain, Key=env.get(kept)["key"], Body=MOTO_IMG.read_bytes())
    again = shows.answer(kept, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="a")
    assert again.labelled_key == ok.labelled_key
    copied = env.s3.get_object(Bucket=plain, Key=ok.labelled_key)["Body"].read()
    assert copied == BIKE.read_bytes()


def copied_but_not_listed(env: Env) -> str:
    """A record held by ana's "bicycle": its copy made, its manifest line not written."""
    record_id = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    failing = ReviewService(
        settings(), s3=FailingS3(env.s3, "put_object"), dynamodb=NoScan(env.dynamodb),
        clock=lambda: NOW,
    )  # fmt: skip
    with pytest.raises(ReviewIncomplete):
        failing.answer(record_id, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="ana")
    return record_id


def test_a_held_answer_whose_image_is_gone_stays_listed_for_its_holder(env: Env) -> None:
    """The copy was made and the manifest line failed; then the version was deleted. The
    record holds an answer whose copy is training data already: only its holder's retry
    finishes it, so a page that finds the image gone must not take it out of the queue."""
    record_id = copied_but_not_listed(env)
    record = env.get(record_id)
    env.s3.delete_object(Bucket=BUCKET, Key=record["key"], VersionId=record["version_id"])
    reviews = service(env)
    with pytest.raises(ObjectNotFound):
        reviews.read_for_display(record_id)
    assert "image_gone_at" not in env.get(record_id)
    assert [i.record_id for i in reviews.queue().items] == [record_id]
    finished = reviews.answer(
        record_id, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="ana"
    )
    assert finished.record["status"] == "REVIEWED"


def test_an_expired_hold_whose_image_is_gone_is_taken_back_and_leaves_the_queue(
    env: Env,
) -> None:
    """The holder never came back: nobody else can take the hold over (that needs the
    image), so once it has expired a page that finds the image gone takes the answer back,
    with its copy and manifest line, and the record leaves the queue."""
    record_id = copied_but_not_listed(env)
    copy = env.get(record_id)["labelled_key"]
    assert env.s3.head_object(Bucket=BUCKET, Key=copy)  # the copy was made
    record = env.get(record_id)
    env.s3.delete_object(Bucket=BUCKET, Key=record["key"], VersionId=record["version_id"])
    later = NOW + settings().hold_expiry + timedelta(minutes=1)
    reviews = ReviewService(
        settings(), s3=env.s3, dynamodb=NoScan(env.dynamodb), clock=lambda: later
    )
    with pytest.raises(ObjectNotFound):
        reviews.read_for_display(record_id)
    left = env.get(record_id)
    assert left["status"] == "NEEDS_REVIEW" and left["image_gone_at"] == format_millis(later)
    assert not {"review_label", "reviewer", "reviewed_at", "labelled_key"} & set(left)
    listed = env.s3.list_objects_v2(Bucket=BUCKET, Prefix=settings().labelled_prefix)
    assert copy not in {o["Key"] for o in listed.get("Contents", [])}
    assert [line["record_id"] for line in reviews.read_manifest()] == []
    assert reviews.queue().items == []


def test_a_holder_resending_while_a_page_takes_her_expired_hold_back_is_refused(
    env: Env,
) -> None:
    """The page's take-back removes the hold, then deletes its copy. A resend by the holder
    in between must not hold the record again and finish it as REVIEWED naming a copy the
    page is about to delete: the record is marked gone, and an answer needs it not to be."""
    record_id = copied_but_not_listed(env)
    record = env.get(record_id)
    env.s3.delete_object(Bucket=BUCKET, Key=record["key"], VersionId=record["version_id"])
    later = NOW + settings().hold_expiry + timedelta(minutes=1)
    page = ReviewService(settings(), s3=env.s3, dynamodb=NoScan(env.dynamodb), clock=lambda: later)
    holder = ReviewService(
        settings(), s3=env.s3, dynamodb=NoScan(env.dynamodb), clock=lambda: later
    )
    undo = page._undo
    deferred: list[dict[str, Any]] = []
    page._undo = lambda abandoned, keep: deferred.append(abandoned)  # type: ignore[method-assign]
    hold = holder._hold

    def page_takes_it_back_first(*args: Any, **kwargs: Any) -> dict[str, Any]:
        with pytest.raises(ObjectNotFound):
            page.read_for_display(record_id)
        return hold(*args, **kwargs)

    holder._hold = page_takes_it_back_first  # type: ignore[method-assign]
    with pytest.raises(ReviewError, match="a page found it gone"):
        holder.answer(record_id, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="ana")
    for abandoned in deferred:
        undo(abandoned, keep=None)
    left = env.get(record_id)
    assert left["status"] == "NEEDS_REVIEW" and "image_gone_at" in left
    assert not {"review_label", "reviewer", "labelled_key"} & set(left)
