"""Signing in to the console in ``jwt`` mode: a pasted bearer token, a token
handed over by an identity provider's redirect (in the URL fragment), and a
bad token refused with the API's 401."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from .conftest import serve
from .test_console import png

pytestmark = [pytest.mark.postgres]

SECRET = "console-test-secret-of-at-least-32-characters"


def token(user: str, ttl: int = 600, secret: str = SECRET) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + ttl}, secret, algorithm="HS256")


def test_sign_in_with_a_token(local_env: dict[str, str], browser_factory: Any, tmp_path: Path) -> None:
    env = {**local_env, "EEGHUB_AUTH__MODE": "jwt", "EEGHUB_AUTH__JWT_SECRET": SECRET}
    with serve(env, tmp_path) as server:
        b = browser_factory(server.base)
        b.open("/console/sign-in")
        assert not b.all("#user-id")
        field = b.visible("#token")
        # A token signed with another key is refused by the API and not kept.
        field.send_keys(token("mallory", secret="x" * 40))
        b.css("#sign-in-form button[type=submit]").click()
        b.text_in("#flash", "401")
        assert b.driver.execute_script("return sessionStorage.getItem('eeghub.identity')") is None
        b.shot("jwt-refused")
        field.clear()
        field.send_keys(token("alice"))
        b.css("#sign-in-form button[type=submit]").click()
        b.text_in("#who", "alice")
        assert b.driver.current_url.endswith("/console/experiments")
        b.wait_ready()
        b.visible("#create-experiment").find_element("name", "name").send_keys("Token study")
        b.css("#create-experiment button[type=submit]").click()
        b.wait_ready()
        b.text_in("#experiment-facts", "owner")
        # Previews load from the API's signed links (an <img> cannot send the token).
        (tmp_path / "s.csv").write_text("file_name,trial_type\ndot.png,target\n")
        (tmp_path / "dot.png").write_bytes(png(32, 24, (200, 0, 0)))
        upload = b.visible("#upload-stimuli")
        upload.find_element("name", "stimuli_definition_csv").send_keys(str(tmp_path / "s.csv"))
        upload.find_element("name", "stimulus_files").send_keys(str(tmp_path / "dot.png"))
        upload.find_element("css selector", "button[type=submit]").click()
        b.text_in("#stimulus-job-status", "completed", timeout=60)
        b.wait(lambda d: b.all(".stimulus img"), message="no preview")
        src = b.driver.execute_script("return document.querySelector('.stimulus img').src")
        b.wait(lambda d: d.execute_script("return document.querySelector('.stimulus img').naturalWidth") == 32, message="preview not loaded")
        assert "signature=" in src and src.startswith(server.base + "/api/v1/stimuli/"), src
        b.shot("jwt-experiment")

        # An identity provider redirecting back with the token in the fragment.
        b.driver.execute_script("sessionStorage.clear()")
        b.open(f"/console/sign-in?next=/console/live#access_token={token('bob')}")
        b.text_in("#who", "bob")
        assert b.driver.current_url == server.base + "/console/live", b.driver.current_url
        assert "access_token" not in b.driver.execute_script("return location.href")
        # bob is not a member of alice's experiment: the list is empty.
        b.open("/console/experiments")
        b.visible("#experiments-empty")
