"""The verification recipe in docs/payments.md runs as printed and agrees with paycore:
it accepts what ``signature_header`` signs, and refuses a changed body, another secret
and a replay outside the window."""

from __future__ import annotations

import re
import runpy
import time
from pathlib import Path

from paycore.payments.webhooks import signature_header

DOC = Path(__file__).resolve().parents[2] / "docs" / "payments.md"


def test_the_documented_recipe_runs_and_agrees_with_paycore(tmp_path: Path) -> None:
    """The snippet's own self-check passes, and it verifies paycore's signatures."""
    text = DOC.read_text()
    section = text[text.index("**Verifying a request**") :]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None
    script = tmp_path / "verify.py"
    script.write_text(code.group(1))
    runpy.run_path(str(script), run_name="__main__")  # its asserts are the self-check
    verify = runpy.run_path(str(script))["verify"]
    secret, body = "whsec_docs_0123456789abcdef", b'{"id": "evt_9"}'
    rotating = signature_header(["whsec_new_0123456789abcdef", secret], body)
    assert verify(rotating, body, secret)
    assert not verify(rotating, body + b"x", secret)
    stale = signature_header([secret], body, now=int(time.time()) - 301)
    assert not verify(stale, body, secret)
