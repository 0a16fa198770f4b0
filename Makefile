# Two commands do all set-up on a fresh machine: `make test` and `make sweep`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first and pinned: this pin resolves to a CPU wheel on the build machines;
# a bare `pip install torch` would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install test sweep study study-speech scale converged transfer lint bench clean

$(BIN)/masksep: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,speech,metrics,kokoro]"
	touch $@

install: $(BIN)/masksep

test: install
	$(BIN)/python -m pytest -q tests

# The default sweep: sweeps/quick.yaml on the embedded synthetic data, a fresh
# folder per run (OUT=... to choose one). The report's path is printed at the end.
OUT ?= runs/quick-$(shell date +%Y%m%d-%H%M%S)
sweep: install
	$(BIN)/masksep sweep sweeps/quick.yaml --out $(OUT)

# The embedded study: sweeps/study.yaml (8 head variants x 5 seeds, ~25 min on 2 cores),
# then masksep analyze over its deep and og heads, then the report with the analysis.
STUDY_OUT ?= runs/study-$(shell date +%Y%m%d-%H%M%S)
study: install
	$(BIN)/masksep sweep sweeps/study.yaml --out $(STUDY_OUT)
	$(BIN)/masksep analyze $(STUDY_OUT)
	$(BIN)/masksep report $(STUDY_OUT)

# The study on speech: a corpus spoken by espeak-ng (the speech extra, made once into
# SPEECH_DATA; a second run finds it and makes nothing), then sweeps/study-speech.yaml,
# masksep analyze and the report. The trials read the corpus from MASKSEP_SPEECH_DATA.
SPEECH_DATA ?= $(abspath data/speech)
SPEECH_OUT ?= runs/study-speech-$(shell date +%Y%m%d-%H%M%S)
study-speech: install
	$(BIN)/masksep data speech $(SPEECH_DATA)
	MASKSEP_SPEECH_DATA=$(SPEECH_DATA) $(BIN)/masksep sweep sweeps/study-speech.yaml --out $(SPEECH_OUT)
	MASKSEP_SPEECH_DATA=$(SPEECH_DATA) $(BIN)/masksep analyze $(SPEECH_OUT)
	$(BIN)/masksep report $(SPEECH_OUT)

# The answer across scale (issue 26, results/scale): the budget rung (4x the steps, claims
# at every milestone), the tuned rung (each variant at its own learning rate), the two
# larger backbones of the size ladder, the deep head's width and layout, and the medium
# TCN on speech (espeak-ng alone, then espeak-ng + Kokoro at 26 seeds; the corpora made
# once into SPEECH_DATA and KOKORO_DATA, Kokoro's about 26 minutes), one sweep each into
# SCALE_OUT/<rung>: about 5.7 hours on 2 cores in all (results/scale/README.md; the
# 26-seed rung alone about 98 minutes). The converged budget is `make converged`. The
# table over them:
# masksep overview results/scale/runs.yaml (the committed runs).
SCALE_OUT ?= runs/scale-$(shell date +%Y%m%d-%H%M%S)
scale: install
	for rung in budget tuned size-medium size-convtasnet width-layout width-pn; do \
	  $(BIN)/masksep sweep sweeps/scale-$$rung.yaml --out $(SCALE_OUT)/$$rung || exit 1; done
	$(BIN)/masksep data speech $(SPEECH_DATA)
	MASKSEP_SPEECH_DATA=$(SPEECH_DATA) $(BIN)/masksep sweep sweeps/scale-size-medium-speech.yaml \
	  --out $(SCALE_OUT)/size-medium-speech
	$(BIN)/masksep data speech $(KOKORO_DATA) --engine kokoro
	MASKSEP_ESPEAK_DATA=$(SPEECH_DATA) MASKSEP_KOKORO_DATA=$(KOKORO_DATA) $(BIN)/masksep sweep \
	  sweeps/scale-size-medium-mixed.yaml --out $(SCALE_OUT)/size-medium-mixed

# The converged budget (results/scale/converged-synthetic): 19,200 steps, about 2.5 hours of
# running on 2 cores. Stopped, it continues where it was when run again (--resume); a trial
# that failed for the machine's sake (a full disk, a lost node) runs again with
# `masksep sweep sweeps/scale-converged.yaml --out $(CONVERGED_OUT) --retry-failed`.
CONVERGED_OUT ?= runs/scale-converged
converged: install
	$(BIN)/masksep sweep sweeps/scale-converged.yaml --out $(CONVERGED_OUT) \
	  $(if $(wildcard $(CONVERGED_OUT)/sweep.json),--resume)

# The transfer table (issue 32, results/transfer): both speech corpora (made once; Kokoro
# about 26 minutes on 2 cores), the synthetic test set, the three named heads x 3 seeds
# trained on each of four sources (about 5 minutes each), then every model on every test set.
KOKORO_DATA ?= $(abspath data/kokoro)
SYNTH_TEST ?= $(abspath data/synthetic-test)
TRANSFER_STAMP := runs/transfer-$(shell date +%Y%m%d-%H%M%S)
TRANSFER_OUT ?= $(TRANSFER_STAMP)
transfer: install
	$(BIN)/masksep data speech $(SPEECH_DATA)
	$(BIN)/masksep data speech $(KOKORO_DATA) --engine kokoro
	test -d $(SYNTH_TEST) || $(BIN)/masksep data synth --out $(SYNTH_TEST) --layout librimix \
	  --split test --num 200 --seconds 4 --seed 0
	for src in synthetic espeak kokoro mixed; do \
	  MASKSEP_ESPEAK_DATA=$(SPEECH_DATA) MASKSEP_KOKORO_DATA=$(KOKORO_DATA) \
	  $(BIN)/masksep sweep sweeps/transfer-$$src.yaml --out $(TRANSFER_OUT)/$$src || exit 1; done
	$(BIN)/masksep transfer --out $(TRANSFER_OUT)/table \
	  --train synthetic=$(TRANSFER_OUT)/synthetic --train espeak=$(TRANSFER_OUT)/espeak \
	  --train kokoro=$(TRANSFER_OUT)/kokoro --train espeak+kokoro=$(TRANSFER_OUT)/mixed \
	  --test synthetic=$(SYNTH_TEST) --test espeak=$(SPEECH_DATA)/wav8k/min \
	  --test kokoro=$(KOKORO_DATA)/wav8k/min

lint: install
	$(BIN)/ruff check masksep tests

clean:
	rm -rf runs .pytest_cache
