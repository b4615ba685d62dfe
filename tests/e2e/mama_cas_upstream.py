"""An upstream CAS server that answers in XML only: django-mama-cas (PyPI) in
a throwaway Django project made in a temp dir, sqlite, run with Django's
`runserver --noreload` on a free loopback port.

mama-cas serves /login (a Django form with a CSRF token), /serviceValidate
and /p3/serviceValidate (the same view), both CAS 2.0 XML whatever `format`
says, with `renew` honoured at /login and at validation (a ticket from an
SSO session is not a "primary" one).  Attributes come from the project's
own callback: `mail`, `cn` and a multi-valued `memberOf`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import urljoin

import requests

import conftest
from conftest import free_port

USERNAME = "casuser"
PASSWORD = "Mama-Cas-42"
MAIL = "casuser@mama.example"
GROUPS = ["staff", "a & b <c>"]


class MamaCas:
    def __init__(self, workdir: Path, service_pattern: str) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/cas"
        self.service_pattern = service_pattern
        self.log_path = self.workdir / "mama-cas.log"
        self.label = f"mama-cas (port {self.port}, {self.log_path})"
        self.proc: subprocess.Popen | None = None
        self._log = None

    def url(self, path: str) -> str:
        return self.base + path

    def _write_project(self) -> None:
        w = self.workdir
        (w / "mamaproject").mkdir(exist_ok=True)
        (w / "mamaproject" / "__init__.py").write_text("")
        (w / "mamaproject" / "settings.py").write_text(textwrap.dedent(f"""\
            SECRET_KEY = "throwaway-test-key-{os.urandom(8).hex()}"
            DEBUG = False
            ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
            INSTALLED_APPS = [
                "django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions",
                "django.contrib.messages", "django.contrib.staticfiles", "mama_cas",
            ]
            MIDDLEWARE = [
                "django.contrib.sessions.middleware.SessionMiddleware",
                "django.middleware.common.CommonMiddleware",
                "django.middleware.csrf.CsrfViewMiddleware",
                "django.contrib.auth.middleware.AuthenticationMiddleware",
                "django.contrib.messages.middleware.MessageMiddleware",
            ]
            ROOT_URLCONF = "mamaproject.urls"
            TEMPLATES = [{{
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {{"context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                ]}},
            }}]
            DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {str(w / "db.sqlite3")!r}}}}}
            DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
            STATIC_URL = "/static/"
            USE_TZ = True
            # Django's own session cookie name would clash with nothing here,
            # but keep it apart from any other test server on 127.0.0.1.
            SESSION_COOKIE_NAME = "mamasession"
            CSRF_COOKIE_NAME = "mamacsrf"
            MAMA_CAS_SERVICES = [{{
                "SERVICE": {self.service_pattern!r},
                "CALLBACKS": ["mamaproject.attributes.release"],
            }}]
            LOGGING = {{
                "version": 1, "disable_existing_loggers": False,
                "handlers": {{"console": {{"class": "logging.StreamHandler"}}}},
                "loggers": {{"mama_cas": {{"handlers": ["console"], "level": "DEBUG"}}}},
            }}
            """))
        (w / "mamaproject" / "urls.py").write_text(textwrap.dedent("""\
            from django.urls import include, path
            urlpatterns = [path("cas/", include("mama_cas.urls"))]
            """))
        (w / "mamaproject" / "attributes.py").write_text(textwrap.dedent(f"""\
            def release(user, service):
                return {{"mail": user.email, "cn": "Mama User", "memberOf": {GROUPS!r}}}
            """))
        (w / "manage.py").write_text(textwrap.dedent("""\
            import os, sys
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mamaproject.settings")
            from django.core.management import execute_from_command_line
            execute_from_command_line(sys.argv)
            """))

    def _manage(self, *args: str) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, "manage.py", *args], cwd=self.workdir, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, f"manage.py {' '.join(args)}: {r.stdout}\n{r.stderr}"
        return r

    def start(self, timeout: float = 30.0) -> "MamaCas":
        self._write_project()
        self._manage("migrate", "--noinput", "-v", "0")
        self._manage("shell", "-c",
                     "from django.contrib.auth.models import User; "
                     f"User.objects.create_user({USERNAME!r}, {MAIL!r}, {PASSWORD!r})")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{self.port}", "--noreload"],
            cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        conftest._LIVE.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"mama-cas exited: {self.log_path.read_text(errors='replace')[-3000:]}")
            try:
                if requests.get(self.url("/login"), timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"mama-cas did not answer: {self.log_path.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self in conftest._LIVE:
            conftest._LIVE.remove(self)
        if self._log:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 150) -> str:
        return conftest._tail(self.log_path, lines)


def login(s: requests.Session, login_url: str, username: str = USERNAME,
          password: str = PASSWORD) -> requests.Response:
    """Fill in mama-cas's login form at `login_url` (its /login with the
    query the downstream sent); returns the answer to the POST."""
    page = s.get(login_url, allow_redirects=False, timeout=15)
    assert page.status_code == 200, f"mama-cas /login: {page.status_code} {page.text[:300]}"
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token and 'name="username"' in page.text, page.text[:500]
    # The form has no action: it posts to the page's own URL, query included.
    return s.post(urljoin(page.url, ""), data={
        "csrfmiddlewaretoken": token.group(1), "username": username, "password": password,
    }, headers={"Referer": page.url}, allow_redirects=False, timeout=15)
