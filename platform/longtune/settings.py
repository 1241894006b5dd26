"""Django settings. Everything comes from the environment with embedded defaults.

Embedded default (nothing set): SQLite under var/, objects in var/objects, Celery over a
filesystem broker in var/broker. DATABASE_URL, REDIS_URL and S3_ENDPOINT_URL/S3_BUCKET switch
to PostgreSQL, Redis and S3.
"""

from __future__ import annotations

import dj_database_url

from longtune.config import (
    REPO_ROOT,
    env_bool,
    env_float,
    env_int,
    env_str,
    persistent_secret_key,
    redis_reachable,
    var_dir,
)

BASE_DIR = REPO_ROOT
VAR_DIR = var_dir()

SECRET_KEY = env_str("SECRET_KEY") or persistent_secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = [
    h for h in env_str("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver").split(",") if h
]
CSRF_TRUSTED_ORIGINS = [o for o in env_str("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "longtune.api.apps.ApiConfig",
    "longtune.tenancy",
    "longtune.compute.apps.ComputeConfig",
    "longtune.catalog.apps.CatalogConfig",
    "longtune.evaluation.apps.EvaluationConfig",
    "longtune.datasets.apps.DatasetsConfig",
    "longtune.finetuning.apps.FinetuningConfig",
    "longtune.inference.apps.InferenceConfig",
    "longtune.provisioning.apps.ProvisioningConfig",
    "longtune.dashboard.apps.DashboardConfig",
    "longtune.billing.apps.BillingConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "longtune.api.middleware.ApiErrorMiddleware",
]

ROOT_URLCONF = "longtune.urls"
WSGI_APPLICATION = "longtune.wsgi.application"
ASGI_APPLICATION = "longtune.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [REPO_ROOT / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "longtune.dashboard.context_processors.dashboard",
            ]
        },
    }
]

# --- database ---------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'longtune.sqlite3'}"
DATABASES = {
    "default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 0))
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Several processes (web + worker) share the file: wait for locks instead of failing.
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "tenancy.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

# --- cache / broker ---------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
USE_REDIS = redis_reachable(REDIS_URL)
if USE_REDIS:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("out", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
    CELERY_RESULT_BACKEND = f"db+sqlite:///{VAR_DIR / 'celery-results.sqlite3'}"

# Longest job we expect (a long-context training run) plus margin: an unacked task is only
# redelivered after this, so it must exceed the longest job or it would run twice.
LONGEST_JOB_SECONDS = env_int("LONGEST_JOB_SECONDS", 48 * 3600)
CELERY_VISIBILITY_TIMEOUT = LONGEST_JOB_SECONDS + 3600
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# Time limits per kind of task (compute/time_limits.py maps every task name to a kind): past
# its soft limit a task fails its work with the code time_limit_exceeded; HARD_GRACE seconds
# later a prefork worker kills the child. None of them may exceed LONGEST_JOB_SECONDS (an unacked
# message would be redelivered while the first delivery still runs).
SCRUB_TIME_LIMIT_SECONDS = env_int("SCRUB_TIME_LIMIT_SECONDS", 6 * 3600)
GPU_WORK_TIME_LIMIT_SECONDS = env_int("GPU_WORK_TIME_LIMIT_SECONDS", LONGEST_JOB_SECONDS - 600)
PERIODIC_TASK_TIME_LIMIT_SECONDS = env_int("PERIODIC_TASK_TIME_LIMIT_SECONDS", 300)
TASK_HARD_TIME_LIMIT_GRACE_SECONDS = env_int("TASK_HARD_TIME_LIMIT_GRACE_SECONDS", 60)
# Fairness on the cpu queue: at most this many of one org's files are scrubbed at once; another
# of its files waits (re-checked every SCRUB_DEFER_SECONDS) while other orgs' files take the
# worker's other slots (datasets/fairness.py).
SCRUB_MAX_CONCURRENT_PER_ORG = env_int("SCRUB_MAX_CONCURRENT_PER_ORG", 1)
SCRUB_DEFER_SECONDS = env_float("SCRUB_DEFER_SECONDS", 5)
# A worker process that consumes the cpu queue loads the person-name model (spaCy) when it
# starts (Celery's worker_process_init), so no file's scrub pays the load; off, the first file
# with names on loads it.
SCRUB_PRELOAD_NAME_MODEL = env_bool("SCRUB_PRELOAD_NAME_MODEL", True)

# --- runtime knobs (read by finetuning/conf.py and inference/conf.py) --------------------
# Environment-tunable because the crash-recovery tests need a watchdog that notices a dead worker
# within seconds, while production wants minutes and fewer writes; the same code runs both.
FINETUNE_HEARTBEAT_SECONDS = env_int("FINETUNE_HEARTBEAT_SECONDS", 10)
FINETUNE_STALE_AFTER_SECONDS = env_int("FINETUNE_STALE_AFTER_SECONDS", 180)
FINETUNE_MAX_ATTEMPTS = env_int("FINETUNE_MAX_ATTEMPTS", 3)
FINETUNE_CHECKPOINT_EVERY_STEPS = env_int("FINETUNE_CHECKPOINT_EVERY_STEPS", 50)
FINETUNE_METRICS_EVENT_SECONDS = env_int("FINETUNE_METRICS_EVENT_SECONDS", 5)
FINETUNE_EVAL_EVERY_STEPS = env_int("FINETUNE_EVAL_EVERY_STEPS", 50)
FINETUNE_WORK_DIR = env_str("FINETUNE_WORK_DIR")
# Memory planning (finetuning/planning.plan_memory): the shared training pool's accelerator
# (a gpu_runtime.memory_planner catalogue name: cpu, a100_80gb, h100_80gb, h200_141gb,
# b200_192gb), how many of them one job may use, and the RAM one CPU training process (one
# rank) may fill.
# A dedicated instance's own accelerator type and count replace the first two for its org.
FINETUNE_SHARED_ACCELERATOR = env_str("FINETUNE_SHARED_ACCELERATOR", "cpu")
FINETUNE_SHARED_ACCELERATORS_PER_JOB = env_int("FINETUNE_SHARED_ACCELERATORS_PER_JOB", 1)
FINETUNE_CPU_MEMORY_MB = env_int("FINETUNE_CPU_MEMORY_MB", 8 * 1024)
# Training processes (gloo ranks) a CPU training worker may start for one job whose memory
# plan needs more than one rank; 1: every job trains in the worker process itself.
FINETUNE_LOCAL_WORLD_SIZE = env_int("FINETUNE_LOCAL_WORLD_SIZE", 1)
INFERENCE_HEARTBEAT_SECONDS = env_int("INFERENCE_HEARTBEAT_SECONDS", 5)
INFERENCE_STALE_AFTER_SECONDS = env_int("INFERENCE_STALE_AFTER_SECONDS", 60)
INFERENCE_REQUEST_TIMEOUT_SECONDS = env_int("INFERENCE_REQUEST_TIMEOUT_SECONDS", 300)
INFERENCE_DEFAULT_MAX_TOKENS = env_int("INFERENCE_DEFAULT_MAX_TOKENS", 128)
INFERENCE_STATS_WINDOW = env_int("INFERENCE_STATS_WINDOW", 100)
INFERENCE_SHARED_IDLE_SECONDS = env_int("INFERENCE_SHARED_IDLE_SECONDS", 300)
# A shared server's hot adapters (every org's, one base) and the bytes of its gathered LoRA
# buffers per RoPE group (gpu_runtime.serving EngineConfig.max_adapter_bytes).
INFERENCE_SHARED_MAX_ADAPTERS = env_int("INFERENCE_SHARED_MAX_ADAPTERS", 64)
INFERENCE_SHARED_ADAPTER_BYTES = env_int("INFERENCE_SHARED_ADAPTER_BYTES", 1 << 30)
INFERENCE_WORK_DIR = env_str("INFERENCE_WORK_DIR")
# The month's inference tokens per org are counted in Redis at metering time (the usage rows stay
# the ledger of record); the counter is rebuilt from those rows when missing and expires after
# this long, so any drift (a Redis restart, a lost increment) heals within it.
INFERENCE_TOKEN_COUNTER_TTL_SECONDS = env_int("INFERENCE_TOKEN_COUNTER_TTL_SECONDS", 3600)
# The gateway's cached routes (model -> replica, inference/routing.py) are invalidated by a
# version bumped on every endpoint/replica change; this bounds an entry's life for changes made
# outside the services (a base model's visibility edited by staff).
INFERENCE_ROUTE_CACHE_SECONDS = env_int("INFERENCE_ROUTE_CACHE_SECONDS", 30)
# compute/conf.py: the beat periods and the lost-message sweep.
COMPUTE_REDISPATCH_AFTER_SECONDS = env_float("COMPUTE_REDISPATCH_AFTER_SECONDS", 600)
COMPUTE_REDISPATCH_INTERVAL_SECONDS = env_float("COMPUTE_REDISPATCH_INTERVAL_SECONDS", 60)
FINETUNE_WATCHDOG_INTERVAL_SECONDS = env_float("FINETUNE_WATCHDOG_INTERVAL_SECONDS", 30)
INFERENCE_WATCHDOG_INTERVAL_SECONDS = env_float("INFERENCE_WATCHDOG_INTERVAL_SECONDS", 30)

# --- dedicated instances (provisioning/conf.py) ------------------------------------------
# Driver: "local" (real worker processes on this machine) or "kubernetes" (a Deployment each).
PROVISIONING_DRIVER = env_str("PROVISIONING_DRIVER", "local")
# Accelerators per pool the sales console may allocate: "pool:type=count[,type=count];pool:..."
PROVISIONING_INVENTORY = env_str("PROVISIONING_INVENTORY", "local:cpu=4")
PROVISIONING_HEARTBEAT_SECONDS = env_float("PROVISIONING_HEARTBEAT_SECONDS", 5)
PROVISIONING_HEARTBEAT_STALE_SECONDS = env_float("PROVISIONING_HEARTBEAT_STALE_SECONDS", 30)
PROVISIONING_SUPERVISE_SECONDS = env_float("PROVISIONING_SUPERVISE_SECONDS", 5)
PROVISIONING_K8S_NAMESPACE = env_str("PROVISIONING_K8S_NAMESPACE", "longtune")
PROVISIONING_K8S_IMAGE = env_str("PROVISIONING_K8S_IMAGE", "longtune-worker:latest")
PROVISIONING_K8S_ENV_SECRET = env_str("PROVISIONING_K8S_ENV_SECRET", "longtune-worker-env")
PROVISIONING_K8S_ACCELERATOR_LABEL = env_str(
    "PROVISIONING_K8S_ACCELERATOR_LABEL", "longtune.io/accelerator"
)
PROVISIONING_K8S_POOL_LABEL = env_str("PROVISIONING_K8S_POOL_LABEL", "longtune.io/pool")
PROVISIONING_K8S_IN_CLUSTER = env_bool("PROVISIONING_K8S_IN_CLUSTER", False)
# --- billing (billing/conf.py): off unless STRIPE_API_KEY is set ---------------------------
STRIPE_API_KEY = env_str("STRIPE_API_KEY")
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET")
STRIPE_API_BASE = env_str("STRIPE_API_BASE")  # tests: the fake Stripe server
STRIPE_METER_EVENTS_BASE = env_str("STRIPE_METER_EVENTS_BASE") or STRIPE_API_BASE
STRIPE_WEBHOOK_TOLERANCE_SECONDS = env_int("STRIPE_WEBHOOK_TOLERANCE_SECONDS", 300)
# Price ids per price key (billing/prices.py PRICE_KEYS), e.g. STRIPE_PRICE_PRO=price_123.
STRIPE_PRICE_IDS = {
    key: env_str(f"STRIPE_PRICE_{key.upper()}")
    for key in (
        "pro",
        "enterprise",
        "training_tokens",
        "prompt_tokens",
        "completion_tokens",
        "instance_minutes",
    )
    if env_str(f"STRIPE_PRICE_{key.upper()}")
}
STRIPE_METER_EVENT_NAMES = {
    "training_tokens": env_str("STRIPE_METER_TRAINING_TOKENS", "longtune_training_tokens"),
    "prompt_tokens": env_str("STRIPE_METER_PROMPT_TOKENS", "longtune_prompt_tokens"),
    "completion_tokens": env_str("STRIPE_METER_COMPLETION_TOKENS", "longtune_completion_tokens"),
    "instance_minutes": env_str("STRIPE_METER_INSTANCE_MINUTES", "longtune_instance_minutes"),
}
BILLING_GRACE_PERIOD_SECONDS = env_int("BILLING_GRACE_PERIOD_SECONDS", 7 * 24 * 3600)
BILLING_OUTBOX_BATCH_SIZE = env_int("BILLING_OUTBOX_BATCH_SIZE", 100)
BILLING_OUTBOX_MAX_BATCHES = env_int("BILLING_OUTBOX_MAX_BATCHES", 50)
BILLING_OUTBOX_LOOKBACK_DAYS = env_int("BILLING_OUTBOX_LOOKBACK_DAYS", 35)
BILLING_OUTBOX_BACKOFF_BASE_SECONDS = env_float("BILLING_OUTBOX_BACKOFF_BASE_SECONDS", 5)
BILLING_OUTBOX_BACKOFF_MAX_SECONDS = env_float("BILLING_OUTBOX_BACKOFF_MAX_SECONDS", 900)
BILLING_OUTBOX_INTERVAL_SECONDS = env_float("BILLING_OUTBOX_INTERVAL_SECONDS", 30)
BILLING_DUNNING_INTERVAL_SECONDS = env_float("BILLING_DUNNING_INTERVAL_SECONDS", 300)
BILLING_CHECKOUT_SUCCESS_URL = env_str(
    "BILLING_CHECKOUT_SUCCESS_URL", "http://localhost:8000/billing?checkout=success"
)
BILLING_CHECKOUT_CANCEL_URL = env_str(
    "BILLING_CHECKOUT_CANCEL_URL", "http://localhost:8000/billing?checkout=cancelled"
)
BILLING_PORTAL_RETURN_URL = env_str("BILLING_PORTAL_RETURN_URL", "http://localhost:8000/billing")
# The dashboard's public base URL, for links in emails sent without a request (budget alerts).
LONGTUNE_PUBLIC_URL = env_str("LONGTUNE_PUBLIC_URL", "http://localhost:8000")

# --- object storage ---------------------------------------------------------------------
S3_ENDPOINT_URL = env_str("S3_ENDPOINT_URL")
S3_BUCKET = env_str("S3_BUCKET")
S3_REGION = env_str("AWS_DEFAULT_REGION", "us-east-1")
LOCAL_OBJECTS_DIR = VAR_DIR / "objects"

# --- models -----------------------------------------------------------------------------
MODELS_DIR = env_str("LONGTUNE_MODELS_DIR") or str(VAR_DIR / "models")
# Base model whose tokenizer counts upload tokens (else the first public one).
LONGTUNE_DEFAULT_BASE_MODEL = env_str("LONGTUNE_DEFAULT_BASE_MODEL") or None
# Largest scrubbed file GET /v1/files/{id}/token_stats tokenizes in the request.
TOKEN_STATS_MAX_BYTES = env_int("TOKEN_STATS_MAX_BYTES", 8 * 1024 * 1024)

# --- REST framework ---------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "longtune.tenancy.authentication.ApiKeyAuthentication",
        "longtune.tenancy.authentication.SessionOrgAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["longtune.tenancy.permissions.HasOrgRole"],
    "DEFAULT_THROTTLE_CLASSES": ["longtune.tenancy.throttling.OrgRateThrottle"],
    "EXCEPTION_HANDLER": "longtune.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "longtune.api.schema.ApiAutoSchema",
    "DEFAULT_METADATA_CLASS": "longtune.api.metadata.RoutingMetadata",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "longtune.api.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "LongTune API",
    "DESCRIPTION": "Long-context fine-tuning and serving. OpenAI-compatible where OpenAI has an equivalent.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SCHEMA_PATH_PREFIX": r"/v1",
    # Request and response components apart: a request schema carries what the serializer
    # validates (minLength, writeOnly, binary files), a response what it returns.
    "COMPONENT_SPLIT_REQUEST": True,
    # A PATCH is validated with the same serializer as its schema says (no "Patched" copy
    # with every field optional): members require `role`.
    "COMPONENT_SPLIT_PATCH": False,
    # A File may have any purpose; an upload only a dataset's (result files are never uploaded).
    "ENUM_NAME_OVERRIDES": {
        "PurposeEnum": "longtune.datasets.models.DATASET_PURPOSE_CHOICES",
        "FilePurposeEnum": "longtune.datasets.models.FilePurpose",
        "PaidPlanEnum": "longtune.billing.serializers.PAID_PLAN_CHOICES",
        "PlanEnum": "longtune.tenancy.models.Plan",
    },
    # The API is documented for API keys; the session door is the dashboard's, not a client's.
    "AUTHENTICATION_WHITELIST": ["longtune.tenancy.authentication.ApiKeyAuthentication"],
}

DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_TEMP_DIR = None

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
LOGIN_URL = "/login"  # the dashboard's (the admin keeps its own /admin/login/)
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

# --- browser sessions (the dashboard) ------------------------------------------------------
# Cookies are always HttpOnly and SameSite=Lax. LONGTUNE_HTTPS=true (set it wherever the site is
# served over TLS, i.e. every real deployment) makes them Secure-only and turns on HSTS; the
# embedded default serves plain http on 127.0.0.1, where Secure cookies would never be sent back.
HTTPS = env_bool("LONGTUNE_HTTPS", False)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True  # pages carry the token in forms and htmx headers, not JS-read cookies
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000) if HTTPS else 0
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if env_bool("SECURE_PROXY_SSL_HEADER", False):  # behind a TLS-terminating proxy that sets it
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 14 * 24 * 3600)
# Failed log-ins allowed per client IP and per email in a window before the form refuses.
# Requests per hour per client IP to the public endpoints (signup, invitation accept).
PUBLIC_ENDPOINT_REQUESTS_PER_HOUR = env_int("PUBLIC_ENDPOINT_REQUESTS_PER_HOUR", 30)
LOGIN_MAX_FAILURES = env_int("LOGIN_MAX_FAILURES", 10)
LOGIN_THROTTLE_WINDOW_SECONDS = env_int("LOGIN_THROTTLE_WINDOW_SECONDS", 900)
# Part size of the dashboard's chunked browser upload (the Uploads API takes up to 64 MiB).
DASHBOARD_UPLOAD_PART_BYTES = env_int("DASHBOARD_UPLOAD_PART_BYTES", 8 * 1024 * 1024)

# --- email (invitations, password reset): console by default, SMTP from the environment ----
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))  # the filebased backend's
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "LongTune <noreply@localhost>")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.request": {"level": "ERROR"}},
}
