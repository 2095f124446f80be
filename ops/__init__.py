"""Operations side-calls: logging, alerts, retries, best-effort wrappers."""
