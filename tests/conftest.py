"""Shared test configuration.

Tests that need a real server ask for one of the service fixtures below. When
the server cannot be reached the test is skipped, unless
``EEGHUB_TEST_REQUIRE_SERVICES=1`` (as in ``.ci/run``), where a missing
service fails the run instead.

Where the servers are (defaults match the development machine):

- ``EEGHUB_TEST_DATABASE_URL``  postgresql://postgres@127.0.0.1:5432/test
- ``EEGHUB_TEST_RABBITMQ_URL``  amqp://guest:guest@127.0.0.1:5672/
- ``EEGHUB_TEST_S3_ENDPOINT``   http://127.0.0.1:8333 (started by the tests
  with ``weed mini`` when nothing answers there and ``weed`` is installed)
"""

from __future__ import annotations

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.s3",
]
