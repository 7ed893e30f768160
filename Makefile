# canal: two commands on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROTOS := $(shell find protos -name '*.proto')
STAMP := $(VENV)/.installed
GEN := gen/.stamp

.PHONY: run test lint typecheck protos bench load chaos drift clean install

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "canal-dev.pth").write_text("$(CURDIR)\n$(CURDIR)/gen\n")'
	touch $(STAMP)

install: $(STAMP) $(GEN)

$(GEN): $(STAMP) $(PROTOS)
	rm -rf gen && mkdir -p gen
	$(BIN)/python -m grpc_tools.protoc -I protos -I $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
		--python_out=gen --pyi_out=gen --grpc_python_out=gen $(PROTOS)
	touch $(GEN)

protos: $(GEN)

run: install
	$(BIN)/canal up

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not chaos" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; exit 1; fi; exit $$rc

lint: install
	$(BIN)/ruff check libs services tools tests
	$(BIN)/mypy libs services tools

bench: install
	$(BIN)/canal bench $(if $(QUICK),--quick --out bench/quick,)

load: install
	$(BIN)/canal load

chaos: install
	$(BIN)/python -m pytest -q -p no:cacheprovider -m chaos tests/chaos

drift: install
	$(BIN)/canal drift

clean:
	rm -rf gen .canal
