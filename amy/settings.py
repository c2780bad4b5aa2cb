"""Amy Cloud settings: one module, every value from the environment.

`ENVIRONMENT` is `production` unless it says `development` by name: production refuses to start
until every secret is set (one error naming all that are missing); only development falls back to
the repository's own development values, so that the README's commands work on a fresh machine.
`.env.example` lists every variable read here.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import environ
from botocore.config import Config as BotoConfig
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from ingest.queues import DEFAULT_QUEUE, DRAIN_TASK, NORMALIZE_QUEUE, NORMALIZE_TASK, RECONCILE_TASK

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

# GENERAL
# ------------------------------------------------------------------------------
# The secrets below have values printed in this repository: a deployment that forgot to name its
# environment must not run on them, so only an explicit `development` enables them.
ENVIRONMENT = env.str("ENVIRONMENT", default="production")
if ENVIRONMENT not in {"production", "development"}:
    raise ImproperlyConfigured("ENVIRONMENT must be 'production' or 'development'")
IS_PRODUCTION = ENVIRONMENT == "production"
# Production settings found unset, reported together once every secret has been read (below).
_MISSING_IN_PRODUCTION: list[str] = []


def _secret(name: str, development_default: str) -> str:
    """A secret: required in production, a fixed development value otherwise."""
    value = env.str(name, default="")
    if value:
        return value
    if IS_PRODUCTION:
        _MISSING_IN_PRODUCTION.append(name)
    return "" if IS_PRODUCTION else development_default


DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = _secret("SECRET_KEY", "development-only-secret-key-do-not-use-in-production-0123456789")
ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=[] if IS_PRODUCTION else ["127.0.0.1", "localhost", "[::1]", "testserver"]
)
if IS_PRODUCTION and not ALLOWED_HOSTS:
    _MISSING_IN_PRODUCTION.append("ALLOWED_HOSTS")

TIME_ZONE = "UTC"
USE_TZ = True
USE_I18N = False
LANGUAGE_CODE = "en-us"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "amy.urls"
WSGI_APPLICATION = "amy.wsgi.application"
STATIC_URL = "static/"
# WhiteNoise serves the admin's files straight from the installed apps, so neither `scripts/run`
# nor the image needs a collectstatic step (hence no STATIC_ROOT); the files are few (the
# console's) and found at start.
WHITENOISE_USE_FINDERS = True

INSTALLED_APPS = [
    "admin_ops.console_apps.ConsoleAdminConfig",  # django.contrib.admin, the console's site as default
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_celery_beat",
    "corsheaders",
    "axes",
    "accounts",
    "ingest",
    "admin_ops",
]

MIDDLEWARE = [
    "amy.middleware.RequestIdMiddleware",
    "admin_ops.metrics.MetricsMiddleware",
    # Before anything that may answer on its own, so those answers carry the CORS headers too.
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # The console's CSS and JS, from the app's own process (no separate static server to run).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "accounts.idempotency.IdempotencyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "amy.middleware.ErrorEnvelopeMiddleware",
    # Last, as django-axes asks: it answers a locked-out console sign-in (429).
    "axes.middleware.AxesMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# The webhook reads its own capped stream; APPEND_SLASH would turn a POST to a slash-less alias
# into a redirect that Terra does not follow.
APPEND_SLASH = False
CSRF_FAILURE_VIEW = "amy.exception_handler.csrf_failure"

# DATABASES
# ------------------------------------------------------------------------------
# https://docs.djangoproject.com/en/6.0/ref/settings/#databases
DATABASES = {
    "default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/amy"),
}
DATABASES["default"].update(
    {
        "ATOMIC_REQUESTS": False,  # services own their transactions
        "CONN_MAX_AGE": env.int("DB_CONN_MAX_AGE", default=60),
        "CONN_HEALTH_CHECKS": True,
    }
)
DATABASES["default"].setdefault("OPTIONS", {})
DATABASES["default"]["OPTIONS"].update(
    {
        "connect_timeout": env.int("DB_CONNECT_TIMEOUT", default=3),
        # A stuck statement or lock must surface as an error (retried), not hang a worker.
        "options": "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout=60000".format(
            env.int("DB_STATEMENT_TIMEOUT_MS", default=30000), env.int("DB_LOCK_TIMEOUT_MS", default=5000)
        ),
    }
)

# REDIS, CACHE
# ------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"socket_timeout": 1, "socket_connect_timeout": 1},
    }
}

# TERRA
# ------------------------------------------------------------------------------
# Comma-separated: several secrets are accepted at once, for rotation and for several Terra
# environments posting to one URL.
TERRA_WEBHOOK_SECRETS = [
    s.strip() for s in _secret("TERRA_WEBHOOK_SECRET", "dev-terra-webhook-secret").split(",") if s.strip()
]
TERRA_DEV_ID = _secret("TERRA_DEV_ID", "")
TERRA_API_KEY = _secret("TERRA_API_KEY", "")
# Without credentials (development) outbound Terra calls are skipped, not sent to fail.
TERRA_API_CONFIGURED = bool(TERRA_DEV_ID and TERRA_API_KEY)
TERRA_API_BASE_URL = env.str("TERRA_API_BASE_URL", default="https://api.tryterra.co/v2").rstrip("/")
TERRA_API_TIMEOUT_SECONDS = env.float("TERRA_API_TIMEOUT_SECONDS", default=10.0)
TERRA_SIGNATURE_TOLERANCE_SECONDS = 300
# Where the worker may fetch an s3_payload ping's body from (ingest/services/payload_fetch.py):
# `scheme://host[:port]`, comma-separated; `*.` stands for one or more labels. A private or
# loopback address is fetched from only when it is itself listed here.
AMY_S3_PAYLOAD_HOSTS = env.list("AMY_S3_PAYLOAD_HOSTS", default=["https://*.amazonaws.com"])

# PIPELINE; every number is a setting so tests can shrink it.
# ------------------------------------------------------------------------------
AMY_WEBHOOK_MAX_BYTES = env.int("AMY_WEBHOOK_MAX_BYTES", default=64 * 1024 * 1024)
AMY_RETRY_BASE_SECONDS = env.float("AMY_RETRY_BASE_SECONDS", default=30.0)
AMY_RETRY_MAX_SECONDS = env.float("AMY_RETRY_MAX_SECONDS", default=600.0)
AMY_MAX_RETRIES = env.int("AMY_MAX_RETRIES", default=5)
AMY_MAX_DELIVERIES = env.int("AMY_MAX_DELIVERIES", default=8)
AMY_DRAIN_LIMIT = env.int("AMY_DRAIN_LIMIT", default=500)
AMY_DRAIN_WINDOW_SECONDS = env.int("AMY_DRAIN_WINDOW_SECONDS", default=24 * 3600)
AMY_VISIBILITY_TIMEOUT = env.int("AMY_VISIBILITY_TIMEOUT", default=1800)
AMY_TASK_TIME_LIMIT = env.int("AMY_TASK_TIME_LIMIT", default=300)
# After its own event a normalize delivery takes waiting rows in batches of this many, for at most
# this long (0 turns it off): one Celery hand-off costs more than normalizing an event.
AMY_NORMALIZE_BATCH_SIZE = env.int("AMY_NORMALIZE_BATCH_SIZE", default=100)
AMY_NORMALIZE_BATCH_SECONDS = env.float("AMY_NORMALIZE_BATCH_SECONDS", default=2.0)
# After a failed publish the web process stops trying Redis for this long (the drain catches up),
# so a broker outage costs one slow request per process, not one per webhook.
AMY_PUBLISH_COOLDOWN_SECONDS = env.float("AMY_PUBLISH_COOLDOWN_SECONDS", default=5.0)
AMY_BROKER_TIMEOUT_SECONDS = env.float("AMY_BROKER_TIMEOUT_SECONDS", default=1.0)
AMY_BACKFILL_DAYS = 28
# A long import stops at a batch boundary after this long and queues its continuation.
AMY_IMPORT_SLICE_SECONDS = env.float("AMY_IMPORT_SLICE_SECONDS", default=AMY_TASK_TIME_LIMIT / 2)

# A worker holds a retry unacknowledged while its countdown runs (up to AMY_RETRY_MAX_SECONDS plus
# the 20 % jitter) and then while the task runs: past the visibility timeout Redis hands the message
# out again and both copies run. Longer waits hop (ingest/terra_task.py).
if AMY_RETRY_MAX_SECONDS * 1.2 + AMY_TASK_TIME_LIMIT >= AMY_VISIBILITY_TIMEOUT:
    raise ImproperlyConfigured(
        "AMY_VISIBILITY_TIMEOUT must exceed AMY_RETRY_MAX_SECONDS * 1.2 (its jitter) + AMY_TASK_TIME_LIMIT"
    )

# API, AUTH (read here so production fails loudly at start; used by the accounts app)
# ------------------------------------------------------------------------------
AMY_JWT_SECRET = _secret("AMY_JWT_SECRET", "dev-amy-jwt-secret-0123456789abcdef0123456789")
AMY_ADMIN_KEY = _secret("AMY_ADMIN_KEY", "dev-admin-key")
if _MISSING_IN_PRODUCTION:
    raise ImproperlyConfigured(
        f"ENVIRONMENT={ENVIRONMENT}{'' if 'ENVIRONMENT' in env.ENVIRON else ' (the default)'} needs these settings, "
        f"which are not set: {', '.join(_MISSING_IN_PRODUCTION)}. Set them (see .env.example), or set "
        "ENVIRONMENT=development to run locally on the repository's development values."
    )
AMY_ADMIN_READ_KEY = env.str("AMY_ADMIN_READ_KEY", default="")
AMY_ADMIN_FAILURES_PER_MINUTE = env.int("AMY_ADMIN_FAILURES_PER_MINUTE", default=20)
# /metrics needs the ops key unless this is set (then the network must restrict it).
AMY_METRICS_PUBLIC = env.bool("AMY_METRICS_PUBLIC", default=False)
# When set, every web and worker process writes its metrics there and /metrics merges them;
# prometheus_client reads the same variable from the environment itself (docs/deployment.md).
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="")
# A Celery worker serves its own pool's metrics on this port when set (admin_ops.metrics); no key,
# so the address must be one only Prometheus reaches (docs/deployment.md).
AMY_WORKER_METRICS_PORT = env.int("AMY_WORKER_METRICS_PORT", default=0)
AMY_WORKER_METRICS_ADDR = env.str("AMY_WORKER_METRICS_ADDR", default="127.0.0.1")
AMY_CLI_TOKEN_DAYS = 30
AMY_IDEMPOTENCY_SECONDS = 24 * 3600
# How long a running request holds its Idempotency-Key: at least the longest a request may run once
# its body is in (storing a 50 MB import); a request killed mid-way blocks its key this long.
AMY_IDEMPOTENCY_IN_PROGRESS_SECONDS = env.int("AMY_IDEMPOTENCY_IN_PROGRESS_SECONDS", default=15 * 60)
AMY_AUTH_RATE_PER_MINUTE = env.int("AMY_AUTH_RATE_PER_MINUTE", default=30)
AMY_USER_RATE_PER_MINUTE = env.int("AMY_USER_RATE_PER_MINUTE", default=600)
CLERK_JWKS_URL = env.str("CLERK_JWKS_URL", default="")
CLERK_ISSUER = env.str("CLERK_ISSUER", default="")
CLERK_AUTHORIZED_PARTIES = env.list("CLERK_AUTHORIZED_PARTIES", default=[])
CLERK_PUBLISHABLE_KEY = env.str("CLERK_PUBLISHABLE_KEY", default="")
CLERK_JWKS_TIMEOUT_SECONDS = env.float("CLERK_JWKS_TIMEOUT_SECONDS", default=2.0)
# An unknown `kid` refetches the key set at most this often, so random kids cannot turn into
# outbound calls.
CLERK_JWKS_REFETCH_SECONDS = env.float("CLERK_JWKS_REFETCH_SECONDS", default=60.0)
CLERK_JWKS_CACHE_SECONDS = env.float("CLERK_JWKS_CACHE_SECONDS", default=3600.0)
# Clock skew allowed on exp/nbf of Clerk session tokens (short-lived by design).
CLERK_LEEWAY_SECONDS = 5
# Clerk's Backend API: a new user's email address when the session token carries no `email` claim
# (none is looked up without the secret key).
CLERK_SECRET_KEY = env.str("CLERK_SECRET_KEY", default="")
CLERK_API_URL = env.str("CLERK_API_URL", default="https://api.clerk.com/v1").rstrip("/")
CLERK_API_TIMEOUT_SECONDS = env.float("CLERK_API_TIMEOUT_SECONDS", default=2.0)
# CORS (django-cors-headers) on the CLI API only; none allowed unless configured.
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_URLS_REGEX = r"^/v1/.*$"
CORS_ALLOW_HEADERS = ["authorization", "content-type", "idempotency-key", "x-amy-request-id"]
CORS_EXPOSE_HEADERS = ["x-amy-request-id", "retry-after"]
CORS_PREFLIGHT_MAX_AGE = 600
AMY_ERRORS_DOCS_URL = env.str("AMY_ERRORS_DOCS_URL", default="https://api.amy.health/docs/errors")

# CONSOLE SIGN-IN LOCKOUT (django-axes: https://django-axes.readthedocs.io/en/latest/4_configuration.html)
# ------------------------------------------------------------------------------
# Failed sign-ins to the console are counted per username AND client address, so that failures
# sent from elsewhere never lock an operator out; the address is read through the trusted proxies
# (AMY_NUM_PROXIES), the same as every other limit.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_FAILURE_LIMIT = env.int("AMY_CONSOLE_LOGIN_FAILURES", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AMY_CONSOLE_LOCKOUT_MINUTES", default=15))
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "amy.client_ip.client_ip"
AXES_COOLOFF_MESSAGE = "Too many failed sign-ins for this username from this address; try again later."

# FILE STORAGE (lab reports, imports)
# ------------------------------------------------------------------------------
# https://django-storages.readthedocs.io/en/latest/backends/amazon-S3.html
# With AMY_LAB_BUCKET set, uploads go to that S3-compatible bucket (AWS S3, R2, MinIO, ...);
# unset, to local disk under AMY_FILES_ROOT.
AMY_LAB_BUCKET = env.str("AMY_LAB_BUCKET", default="")
AMY_FILES_ROOT = env.str("AMY_FILES_ROOT", default=str(BASE_DIR / "var" / "files"))
AMY_LAB_MAX_BYTES = 10 * 1024 * 1024
AMY_IMPORT_MAX_BYTES = 50 * 1024 * 1024
AMY_IMPORT_BATCH_SIZE = env.int("AMY_IMPORT_BATCH_SIZE", default=500)
# Per user and UTC day (ingest/quotas.py): past them, 429 until midnight UTC.
AMY_LAB_UPLOADS_PER_DAY = env.int("AMY_LAB_UPLOADS_PER_DAY", default=50)
AMY_IMPORTS_PER_DAY = env.int("AMY_IMPORTS_PER_DAY", default=20)
if AMY_LAB_BUCKET:
    _sse = env.str("AWS_S3_SERVER_SIDE_ENCRYPTION", default="AES256")
    UPLOADS_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AMY_LAB_BUCKET,
            "endpoint_url": env.str("AWS_S3_ENDPOINT_URL", default="") or None,
            "region_name": env.str("AWS_S3_REGION_NAME", default="") or None,
            "access_key": env.str("AWS_ACCESS_KEY_ID", default="") or None,
            "secret_key": env.str("AWS_SECRET_ACCESS_KEY", default="") or None,
            "addressing_style": env.str("AWS_S3_ADDRESSING_STYLE", default="") or None,
            "default_acl": None,
            "file_overwrite": False,
            "querystring_auth": True,
            "querystring_expire": 300,  # pre-signed download links live five minutes
            "object_parameters": {"ServerSideEncryption": _sse} if _sse else {},
            # botocore waits 60 s per connect attempt by default: an S3 that does not answer
            # would hold an upload far past any client's patience.
            "client_config": BotoConfig(
                connect_timeout=3, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"}
            ),
        },
    }
else:
    UPLOADS_STORAGE = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": AMY_FILES_ROOT},
    }
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "uploads": UPLOADS_STORAGE,
}

# CELERY
# ------------------------------------------------------------------------------
# https://docs.celeryq.dev/en/stable/userguide/configuration.html ; why each value: the comments
# below and docs/architecture.md (claims, retries, the drain).
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="") or REDIS_URL
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True  # an event's status lives in raw_events
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True  # loops are stopped by the delivery counter in PostgreSQL
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = AMY_TASK_TIME_LIMIT
CELERY_TASK_SOFT_TIME_LIMIT = max(1, AMY_TASK_TIME_LIMIT - 30) if AMY_TASK_TIME_LIMIT > 60 else None
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": AMY_VISIBILITY_TIMEOUT,
    # Sweep unacked messages of dead workers every ~10 s instead of ~100 s.
    "unacked_restore_interval": env.float("AMY_UNACKED_RESTORE_INTERVAL", default=10.0),
    "unacked_restore_throttle": 1,
    "socket_timeout": AMY_BROKER_TIMEOUT_SECONDS,
    "socket_connect_timeout": AMY_BROKER_TIMEOUT_SECONDS,
    "retry_on_timeout": False,  # a timeout is an answer: the drain covers a lost publish
    "health_check_interval": 25,
}
CELERY_BROKER_CONNECTION_TIMEOUT = AMY_BROKER_TIMEOUT_SECONDS
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = 30.0
# A pool child is replaced after this many tasks (a guard against slow leaks; the memory cap below
# is the other). Each replacement pauses that child: replaced too often, a worker loses much of its
# throughput to them (the figures: docs/performance.md, normalize).
CELERY_WORKER_MAX_TASKS_PER_CHILD = env.int("AMY_WORKER_MAX_TASKS_PER_CHILD", default=10_000)
# Celery's Django fixup closes the database connection around every task unless this is set, and a
# new PostgreSQL connection per event is costly (docs/performance.md, normalize).
# Broken connections are still closed after each task (amy/celery.py).
CELERY_DB_REUSE_MAX = CELERY_WORKER_MAX_TASKS_PER_CHILD
CELERY_WORKER_MAX_MEMORY_PER_CHILD = 300_000  # KiB
# Pixels of a HEIC lab photo the worker converts to JPEG (ingest/labs/heic.py): decoding takes
# memory per pixel, so the default keeps a pool child's own footprint plus one conversion under
# the cap above (measured in docs/performance.md, "HEIC conversion memory"). Larger: 413 at upload.
AMY_HEIC_MAX_PIXELS = env.int("AMY_HEIC_MAX_PIXELS", default=16_000_000)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # Django's LOGGING (JSON lines) stays in charge
CELERY_TASK_DEFAULT_QUEUE = DEFAULT_QUEUE
CELERY_TASK_ROUTES = {NORMALIZE_TASK: {"queue": NORMALIZE_QUEUE}}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Every periodic task, declared here only (docs/architecture.md says what each is for): Beat's
# database scheduler writes them into its tables when it starts, where the console shows them.
CELERY_BEAT_SCHEDULE = {
    "drain_stuck_events": {
        "task": DRAIN_TASK,
        "schedule": crontab(minute="*/5"),
        "options": {"queue": DEFAULT_QUEUE},
    },
    "reconcile_recent": {
        "task": RECONCILE_TASK,
        "schedule": crontab(minute="0", hour="3"),
        "options": {"queue": DEFAULT_QUEUE},
    },
    "prune_traces": {
        "task": "admin_ops.prune_traces",
        "schedule": crontab(minute="30", hour="3"),
        "options": {"queue": "amy"},
    },
    "purge_expired_device_logins": {
        "task": "accounts.purge_expired_device_logins",
        "schedule": crontab(minute="0", hour="4"),
        "options": {"queue": "amy"},
    },
}
CELERY_TIMEZONE = "UTC"

# DRF
# ------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "EXCEPTION_HANDLER": "amy.exception_handler.drf_exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.permissions.ActiveAccount"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": ["accounts.throttles.ApiUserRateThrottle"],
    # Behind a reverse proxy, how many X-Forwarded-For hops to trust for the client IP that rate
    # limits key on; unset, REMOTE_ADDR is used (a client-sent header is never trusted).
    "NUM_PROXIES": env.int("AMY_NUM_PROXIES", default=None),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Amy Cloud API",
    "DESCRIPTION": "The API Amy's CLI uses, and Terra's webhook. Errors use one envelope (see Error).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "ENUM_NAME_OVERRIDES": {"LabUploadStatusEnum": "ingest.models.LabUploadStatus"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "amy.openapi.add_error_responses",
    ],
}

# SECURITY (production)
# ------------------------------------------------------------------------------
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
if IS_PRODUCTION:
    # TLS ends at the proxy, which must set this header and drop a client's own copy; a
    # deployment whose proxy does not can set SECURE_PROXY_SSL_HEADER to "" (no header trusted).
    _proxy_header = env.str("SECURE_PROXY_SSL_HEADER", default="HTTP_X_FORWARDED_PROTO")
    SECURE_PROXY_SSL_HEADER = (_proxy_header, "https") if _proxy_header else None
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    # A load balancer's health check reaches the container over plain HTTP: a redirect would
    # read as unhealthy. Nothing secret is asked or answered there.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    # Both bind every subdomain of the host (preload, for years): a deployment on a shared
    # parent domain turns them off.
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)

# Tracing: off makes the tracer a no-op (to measure its cost); traces kept this long.
AMY_TRACING = env.bool("AMY_TRACING", default=True)
AMY_TRACE_RETENTION_DAYS = env.int("AMY_TRACE_RETENTION_DAYS", default=14)

# LOGGING: JSON lines on stdout, each with the request id
# ------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "amy.logging.RequestIdFilter"}},
    "formatters": {"json": {"()": "amy.logging.JsonFormatter"}},
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "json",
            "filters": ["request_id"],
        },
        # Trace records (amy.tracing): buffered, then a background thread writes their JSON lines
        # to stdout and their rows to trace_events (COPY), off the request's path.
        "trace_db": {
            "class": "admin_ops.trace_handler.TraceDatabaseHandler",
            "stream": "ext://sys.stdout",
            "batch_size": env.int("AMY_TRACE_BATCH_SIZE", default=1000),
            "flush_interval_ms": env.int("AMY_TRACE_FLUSH_MS", default=250),
        },
    },
    "root": {"handlers": ["stdout"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # Django logs every 4xx as a warning with the path; our own lines say more.
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "WARNING"},
        # django-axes announces itself at every start; its failures and lockouts are warnings.
        "axes.apps": {"level": "WARNING"},
        # Traces: on stdout and in trace_events through trace_db alone, whatever LOG_LEVEL says.
        "amy.trace": {"handlers": ["trace_db"], "level": "INFO", "propagate": False},
    },
}
