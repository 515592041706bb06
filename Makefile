.PHONY: test unit lint typecheck demo
test:        ; ./scripts/test
unit:        ; .venv/bin/python -m pytest tests/unit -q
lint:        ; .venv/bin/ruff check . && .venv/bin/ruff format --check src tests
typecheck:   ; .venv/bin/mypy
demo:        ; ./scripts/demo
