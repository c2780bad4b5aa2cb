# One image for web, worker and beat; docker-compose.yml picks the command.
FROM python:3.13.1-slim-bookworm

# Production unless the deployment names development: the image refuses to start until its
# secrets are set (see .env.example); docker-compose.yml names development for a local stack.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ENVIRONMENT=production

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
RUN useradd --system --uid 1000 amy && chown -R amy /app
USER amy

EXPOSE 8000
CMD ["gunicorn", "amy.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--timeout", "30"]
