"""The dashboard in a real browser (Debian's chromium via Playwright) against a live uvicorn
server with a real Celery worker, PostgreSQL, Redis and S3:

sign up -> create an API key (secret shown once, gone on the next visit) -> upload
examples/support_chat.jsonl (progress bar, the scrubber's PII report) -> submit a fine-tune from
the form -> the job page's status and loss chart update live until it succeeds -> deploy the
fine-tuned model to an endpoint -> chat with it in the playground, the answer streamed token by
token -> the usage page shows the tokens -> a second user in another org gets 404 on the first
org's pages. axe-core runs on every page: no serious or
critical violations. Screenshots of each step: var/screenshots/dashboard/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.dashboard.browser import Steps
from tests.finetuning.conftest import FAST_WORKER_ENV
from tests.finetuning.helpers import make_base_model
from tests.fixtures.services import REPO_ROOT, asgi_server

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DATASET = REPO_ROOT / "examples" / "support_chat.jsonl"
PASSWORD = "a long browser password 77"


def sign_up(page, base: str, email: str, org_name: str, mail_dir: Path) -> str:
    """The form, then the link from the mail (the server writes mails to ``mail_dir``)."""
    page.goto(base + "/signup")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.fill("#organization_name", org_name)
    page.click("button[type=submit]")
    page.wait_for_selector("text=Check your email")
    mails = sorted(mail_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)
    body = next(m.read_text() for m in reversed(mails) if email in m.read_text())
    link = next(w for w in body.split() if "/signup/confirm/" in w)
    page.goto(link)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/o/[^/]+/$"))
    return page.url


def test_sign_up_to_fine_tuned_model_in_a_browser(
    browser, start_worker, worker_env, shared_storage, tiny_base_dir, monkeypatch, tmp_path
):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's loop vs. the ORM
    make_base_model(
        name="tiny-dash", location=tiny_base_dir, original=64, maximum=4096, is_public=True
    )
    worker = start_worker("cpu,gpu", **FAST_WORKER_ENV)
    server = start_worker("inference", INFERENCE_HEARTBEAT_SECONDS="1", OMP_NUM_THREADS="1")
    steps = Steps("sign-up-to-model")
    # Small parts, so the 13 KB example goes up in several chunks through the Uploads API.
    mail_dir = tmp_path / "mail"
    server_env = {
        **worker_env,
        "DASHBOARD_UPLOAD_PART_BYTES": "4096",
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(mail_dir),
    }
    with asgi_server(server_env) as base:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)

        page.goto(base + "/")
        assert page.get_by_role("link", name="Sign up").first.is_visible()
        steps.check(page, "landing")

        overview = sign_up(page, base, "ada@example.com", "Ada Labs", mail_dir)
        org_path = overview.removeprefix(base)
        assert page.get_by_role("heading", name="Ada Labs").is_visible()
        steps.check(page, "overview")

        # API key: the secret once, then never again.
        page.goto(base + org_path + "keys/")
        page.fill("#key-name", "laptop")
        page.click("text=Create key")
        secret = page.input_value("[data-testid=new-secret]")
        assert secret.startswith("lt_")
        steps.check(page, "key-created")
        page.goto(base + org_path + "keys/")
        assert secret not in page.content() and "laptop" in page.content()

        # Upload the example dataset; the report shows the scrubber's PII counts.
        page.goto(base + org_path + "files/")
        steps.check(page, "files-empty")
        page.set_input_files("#upload-file", str(DATASET))
        # Keep what the bar showed once the page moves on.
        page.evaluate(
            "() => new MutationObserver(() => { const b = document.querySelector("
            "'#upload-progress'); sessionStorage.setItem('bar', b.value + '/' + "
            "(b.dataset.parts || 0)); }).observe(document.querySelector('#upload-progress'), "
            "{attributes: true})"
        )
        page.click("#upload-form button[type=submit]")
        page.wait_for_url(re.compile(r"/files/file-"))
        bar_value, parts = page.evaluate("sessionStorage.getItem('bar')").split("/")
        assert bar_value == "100" and int(parts) == 4, (bar_value, parts)  # 13,511 B in 4 KiB
        page.wait_for_selector("#pii-report", timeout=120_000)
        report = page.inner_text("#pii-report")
        assert "EMAIL" in report.upper(), report
        steps.check(page, "file-report")

        # Fine-tune from the form; the job page updates live until it succeeds.
        page.click("text=Fine-tune on this file")
        page.select_option("#model", "tiny-dash")
        page.fill("#context_length", "256")
        page.select_option("#rope_method", "yarn")
        page.fill("#n_epochs", "1")
        page.fill("#batch_size", "1")
        assert "yarn ×4" in page.inner_text("#context-hint")  # 64 → 256 tokens
        steps.check(page, "job-form")
        page.click("text=Start fine-tuning")
        page.wait_for_url(re.compile(r"/jobs/ftjob-"))
        job_path = page.url.removeprefix(base)
        page.wait_for_function(
            "() => ['succeeded', 'failed', 'cancelled'].includes("
            "document.querySelector('#job-status')?.textContent.trim())",
            timeout=300_000,
        )
        status = page.inner_text("#job-status").strip()
        assert status == "succeeded", (
            status,
            page.inner_text("#job-live"),
            worker.read_log()[-3000:],
        )
        page.wait_for_selector("#loss-chart[data-done=true] canvas", timeout=30_000)
        assert int(page.get_attribute("#loss-chart", "data-points")) >= 1
        assert page.get_attribute("#loss-chart", "data-transport") == "sse"
        assert "ft:" in page.inner_text("#job-live")
        steps.check(page, "job-succeeded")

        # Deploy the fine-tuned model and chat with it; the answer streams in.
        model_name = page.inner_text("#job-live a[href*='endpoints']").strip()
        page.click("#job-live a[href*='endpoints']")
        assert page.input_value("#ep-model") == model_name
        page.click("text=Create endpoint")
        page.wait_for_url(re.compile(r"/endpoints/$"))
        page.click("table a[href*='/endpoints/']")
        page.wait_for_selector("#endpoint-live .status.ready", timeout=240_000)
        steps.check(page, "endpoint-ready")
        page.click("text=Open the playground")
        page.fill("#chat-message", "Hello, I have a question about billing.")
        page.fill("#chat-max-tokens", "16")
        page.click("#chat-form button[type=submit]")
        page.wait_for_selector(".turn.assistant span[data-done=true]", timeout=120_000)
        assert page.inner_text("#chat-error") == ""
        answer = page.locator(".turn.assistant span")
        assert answer.inner_text().strip(), server.read_log()[-3000:]
        assert int(answer.get_attribute("data-chunks")) >= 2  # streamed, not one blob
        steps.check(page, "playground")

        page.goto(base + org_path + "usage/")
        usage = page.inner_text("#usage-table")
        assert model_name in usage
        steps.check(page, "usage-with-tokens")

        # Evaluate the fine-tune from the form: the page refreshes itself until the heatmap
        # (the worker's PNG, through the dashboard) and the chart (uPlot) are drawn.
        page.goto(base + org_path + "evaluations/")
        steps.check(page, "evaluations-empty")
        page.select_option("#model", model_name)
        page.select_option("#suite", "passkey")
        page.fill("#lengths", "256")
        page.fill("#depths", "0.5")
        page.click("text=Start evaluation")
        page.wait_for_url(re.compile(r"/evaluations/evaljob-"))
        page.wait_for_selector(".status.succeeded", timeout=240_000)
        page.wait_for_selector("#eval-chart canvas", timeout=30_000)
        width = page.eval_on_selector("img.heatmap", "img => img.complete && img.naturalWidth")
        assert width and width > 100, width
        steps.check(page, "evaluation-result")

        for name in ("jobs/", "models/", "endpoints/", "members/", "audit/"):
            page.goto(base + org_path + name)
            steps.check(page, name.strip("/"))

        # Another org's user: the first org's pages do not exist for them.
        intruder = browser.new_context().new_page()
        sign_up(intruder, base, "eve@example.com", "Eve Corp", mail_dir)
        for path in (org_path, org_path + "files/", job_path):
            response = intruder.goto(base + path)
            assert response.status == 404, path
        steps.check(intruder, "intruder-404")
        context.close()

    assert not steps.problems, f"axe: serious/critical violations: {steps.problems}"


def test_the_accessibility_check_can_fail(browser):
    """axe-core (vendored) really runs: a page with an unlabelled field and an image without
    alt text is reported, so an empty report above means something."""
    from tests.dashboard.browser import axe_violations

    page = browser.new_page()
    page.set_content(
        '<html lang="en"><head><title>bad</title></head><body><main>'
        '<input type="text"><img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">'
        "</main></body></html>"
    )
    found = {v["id"] for v in axe_violations(page)}
    assert {"label", "image-alt"} <= found, found
