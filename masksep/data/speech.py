"""``masksep data speech OUT``: a speech corpus spoken by a speech synthesizer, in LibriMix's layout.

The embedded data are synthetic talkers; this is speech from a real speech
synthesizer, one of two engines, each an optional extra loaded by this command
only: espeak-ng (``--engine espeak``, the default; this module, through
:mod:`masksep.espeak`; the ``speech`` extra, GPL-3.0-or-later) or Kokoro-82M, a
neural TTS trained on recordings of people (``--engine kokoro``,
:mod:`masksep.data.speech_kokoro` through :mod:`masksep.kokoro`; the ``kokoro``
extra, Apache-2.0). An engine turns its spec into a :class:`Plan` (talkers, one
synthesis job per talker); everything below the synthesis is shared.

espeak-ng: a *talker* is a language voice + a voice variant + a pitch, pitch range
and speaking rate; train, dev and test talkers are disjoint (no (language,
variant, pitch) is shared between them), each split holds several languages and
both genders. Sentences come from a small grammar written for the project
(subject, verb, object, an ending; a lexicon per language).

Written, all into a temporary folder renamed to OUT at the end::

    OUT/corpus.json                    what was asked for (a second run with the same is a no-op)
    OUT/speakers.csv                   every talker: split, language, variant, gender, pitch, ...
    OUT/utterances/wav8k/{train,dev,test}/<talker>/<talker>-<k>.wav   (data.kind=dynamic)
    OUT/wav8k/{min,max}/{train-100,dev,test}/{mix_clean,s1,s2}/*.wav  (data.kind=librimix)
    OUT/wav8k/{min,max}/metadata/mixture_{split}_mix_clean.csv
    (and wav16k/ beside wav8k/ when asked for)

Utterances are resampled from the engine's rate (espeak-ng 22,050 Hz, Kokoro
24 kHz; ``scipy.signal.resample_poly``, band-limited), edge silence trimmed, at
-25 dBFS RMS. Mixtures pair utterances of two talkers of the split with gains
uniform in +-2.5 dB (the same pairs and gains at every rate and mode), cut to the
shorter (min) or padded to the longer (max), scaled down together if a sample
would pass 0.9. No two mixtures of a split share their pair of utterances (drawn
without replacement from every such pair), so a mixture's ID, its two
utterances' names, is unique. The same arguments give the same files, bit for
bit, whatever ``--workers`` is (espeak-ng: one fresh synthesizer process per
talker, see :mod:`masksep.espeak`; Kokoro: deterministic, one thread per session,
see :mod:`masksep.kokoro`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from scipy.signal import resample_poly

from masksep.data import audio
from masksep.errors import UserError

SPLITS = {"train": "train-100", "dev": "dev", "test": "test"}  # utterance folder -> LibriMix split
RATES = (8000, 16000)
MODES = ("min", "max")
LEVEL_DB = -25.0  # RMS of every utterance, dBFS
GAIN_DB = 2.5  # each source of a mixture within +-GAIN_DB of that level
PEAK = 0.9
TRIM_DB = -45.0  # edge samples this far below the utterance's peak are silence
EDGE_S = 0.05  # silence kept at each end
# 2: no two mixtures of a split share their pair of utterances (format 1 could
# draw a pair twice, and the second overwrote the first's files); the engine is named
FORMAT = "masksep-speech-corpus-2"

# A small grammar: subject verb object ending. Words in each language's own spelling.
LEXICON: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "subject": ("the old man", "my sister", "a young doctor", "the teacher", "our neighbour",
                    "the little girl", "a tired driver", "the baker", "his brother", "the captain"),
        "verb": ("carries", "paints", "finds", "wants", "sells", "opens", "watches", "cleans",
                 "forgets", "brings"),
        "object": ("a green bottle", "the wooden table", "seven letters", "a warm coat",
                   "the broken window", "some fresh bread", "a heavy box", "the red umbrella",
                   "two silver keys", "a long rope"),
        "ending": ("every morning", "near the river", "after dinner", "in the garden",
                   "before the storm", "on Sunday", "at the station", "without a word",
                   "for the children", "late at night"),
    },
    "de": {
        "subject": ("der alte Mann", "meine Schwester", "ein junger Arzt", "die Lehrerin",
                    "unser Nachbar", "das kleine Mädchen", "ein müder Fahrer", "der Bäcker",
                    "sein Bruder", "die Kapitänin"),
        "verb": ("trägt", "malt", "findet", "will", "verkauft", "öffnet", "sieht", "putzt",
                 "vergisst", "bringt"),
        "object": ("eine grüne Flasche", "den hölzernen Tisch", "sieben Briefe", "einen warmen Mantel",
                   "das kaputte Fenster", "frisches Brot", "eine schwere Kiste", "den roten Schirm",
                   "zwei silberne Schlüssel", "ein langes Seil"),
        "ending": ("jeden Morgen", "am Fluss", "nach dem Essen", "im Garten", "vor dem Sturm",
                   "am Sonntag", "am Bahnhof", "ohne ein Wort", "für die Kinder", "spät in der Nacht"),
    },
    "fr": {
        "subject": ("le vieil homme", "ma sœur", "un jeune médecin", "la maîtresse", "notre voisin",
                    "la petite fille", "un chauffeur fatigué", "le boulanger", "son frère",
                    "le capitaine"),
        "verb": ("porte", "peint", "trouve", "veut", "vend", "ouvre", "regarde", "nettoie",
                 "oublie", "apporte"),
        "object": ("une bouteille verte", "la table en bois", "sept lettres", "un manteau chaud",
                   "la fenêtre cassée", "du pain frais", "une lourde boîte", "le parapluie rouge",
                   "deux clés d'argent", "une longue corde"),
        "ending": ("chaque matin", "près de la rivière", "après le dîner", "dans le jardin",
                   "avant l'orage", "le dimanche", "à la gare", "sans un mot", "pour les enfants",
                   "tard dans la nuit"),
    },
    "es": {
        "subject": ("el hombre viejo", "mi hermana", "un médico joven", "la maestra", "nuestro vecino",
                    "la niña pequeña", "un conductor cansado", "el panadero", "su hermano",
                    "la capitana"),
        "verb": ("lleva", "pinta", "encuentra", "quiere", "vende", "abre", "mira", "limpia",
                 "olvida", "trae"),
        "object": ("una botella verde", "la mesa de madera", "siete cartas", "un abrigo caliente",
                   "la ventana rota", "pan fresco", "una caja pesada", "el paraguas rojo",
                   "dos llaves de plata", "una cuerda larga"),
        "ending": ("cada mañana", "cerca del río", "después de cenar", "en el jardín",
                   "antes de la tormenta", "el domingo", "en la estación", "sin decir nada",
                   "para los niños", "tarde por la noche"),
    },
    "it": {
        "subject": ("il vecchio", "mia sorella", "un giovane medico", "la maestra", "il nostro vicino",
                    "la bambina", "un autista stanco", "il fornaio", "suo fratello", "il capitano"),
        "verb": ("porta", "dipinge", "trova", "vuole", "vende", "apre", "guarda", "pulisce",
                 "dimentica", "prende"),
        "object": ("una bottiglia verde", "il tavolo di legno", "sette lettere", "un cappotto caldo",
                   "la finestra rotta", "del pane fresco", "una scatola pesante", "l'ombrello rosso",
                   "due chiavi d'argento", "una corda lunga"),
        "ending": ("ogni mattina", "vicino al fiume", "dopo cena", "nel giardino",
                   "prima del temporale", "la domenica", "alla stazione", "senza una parola",
                   "per i bambini", "tardi la notte"),
    },
}
DEFAULT_LANGUAGES = ("en-US", "en", "de", "fr", "es", "it")
DEFAULT_VARIANTS = ("f1", "f2", "f3", "f4", "f5", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8")
# espeak-ng's 0-99 pitch scale (50 is the voice's own), by the variant's gender
PITCH = {"female": (45, 85), "male": (15, 55), "": (30, 70)}
RATE_WPM = (135, 195)
PITCH_RANGE = (25, 80)


@dataclass(frozen=True)
class Plan:
    """What an engine makes of a spec before any synthesis: every talker, one job
    per talker for ``speak`` (a module-level function, run in worker processes of
    the ``spawn`` kind), and how ``speakers.csv`` describes a talker."""

    talkers: list  # each with .name and .split
    jobs: list
    speak: Callable[[Any], list[np.ndarray]]  # job -> the talker's waveforms at ``rate``
    rate: int
    columns: tuple[str, ...]  # speakers.csv, between split and utterances
    rows: list[list]  # one per talker, those columns
    languages: tuple[str, ...]
    fresh_process: bool = False  # one new worker process per talker (espeak-ng's global state)
    initializer: Callable[..., None] | None = None  # run once in each worker process
    initargs: tuple = ()
    facts: dict = field(default_factory=dict)  # the engine's own lines of corpus.json


@dataclass(frozen=True)
class SpeechSpec:
    """What ``masksep data speech`` was asked for: one corpus, all of it (espeak-ng)."""

    engine: ClassVar[str] = "espeak"

    rates: tuple[int, ...] = (8000,)
    modes: tuple[str, ...] = ("min",)
    languages: tuple[str, ...] = DEFAULT_LANGUAGES
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    speakers: dict[str, int] = field(default_factory=lambda: {"train": 60, "dev": 12, "test": 12})
    utterances: dict[str, int] = field(default_factory=lambda: {"train": 25, "dev": 10, "test": 10})
    mixtures: dict[str, int] = field(default_factory=lambda: {"train": 1500, "dev": 200, "test": 200})
    seed: int = 0

    def to_dict(self) -> dict:
        """As corpus.json holds it (lists, not tuples), so that the two compare equal."""
        return json.loads(json.dumps({"format": FORMAT, "engine": self.engine, **asdict(self)}))

    def plan(self) -> Plan:
        """Validate, draw the talkers and their sentences (nothing spoken yet)."""
        from masksep.espeak import RATE, speak_all

        genders = validate(self)
        talkers = draw_talkers(self, genders)
        jobs = [(self.seed * 100003 + i, t.voice, t.rate, t.pitch, t.pitch_range, sentences(self, t, i))
                for i, t in enumerate(talkers)]
        rows = [[t.language, t.variant, t.gender, t.pitch, t.pitch_range, t.rate] for t in talkers]
        return Plan(talkers=talkers, jobs=jobs, speak=speak_all, rate=RATE,
                    columns=("language", "variant", "gender", "pitch", "pitch_range", "rate_wpm"),
                    rows=rows, languages=tuple(self.languages), fresh_process=True)


@dataclass(frozen=True)
class Talker:
    name: str
    split: str
    language: str
    variant: str
    gender: str
    pitch: int
    pitch_range: int
    rate: int

    @property
    def voice(self) -> str:
        return f"{self.language}+{self.variant}"


def check_layout(spec) -> None:
    """Refuse what the layout cannot do (any engine): rates, modes, counts, and
    more mixtures than a split has distinct pairs of utterances."""
    for rate in spec.rates:
        if rate not in RATES:
            raise UserError(f"--rates: {rate} Hz is not one of LibriMix's rates (8000, 16000)")
    for mode in spec.modes:
        if mode not in MODES:
            raise UserError(f"--modes: {mode!r} is not min or max")
    if not spec.rates or not spec.modes:
        raise UserError("--rates and --modes each need at least one value")
    for what in ("speakers", "utterances", "mixtures"):
        for split, n in getattr(spec, what).items():
            if n < 0:
                raise UserError(f"--{split}-{what}: must be >= 0, got {n}")
            if what == "speakers" and n < 2:
                raise UserError(f"--{split}-speakers: a mixture needs 2 talkers, got {n}")
            if what == "utterances" and n < 1:
                raise UserError(f"--{split}-utterances: must be >= 1, got {n}")
    for split in SPLITS:
        n, u = spec.speakers[split], spec.utterances[split]
        pairs = n * (n - 1) // 2 * u * u
        if spec.mixtures[split] > pairs:
            raise UserError(f"--{split}-mixtures: {spec.mixtures[split]} is more than the {pairs} "
                            f"distinct pairs of utterances of two talkers that {n} talkers x {u} "
                            "utterances make")


def validate(spec: SpeechSpec) -> dict[str, str]:
    """Refuse what espeak-ng or the layout cannot do; the variants' genders."""
    from masksep import espeak

    check_layout(spec)
    known = espeak.languages()
    for lang in spec.languages:
        if lang not in known:
            raise UserError(f"--languages: espeak-ng has no language voice {lang!r} "
                            f"(e.g. en, en-US, en-GB-x-rp, de, fr, es, it)")
        if lexicon_key(lang) not in LEXICON:
            raise UserError(f"--languages: no sentences written for {lang!r} "
                            f"(languages with a lexicon: {', '.join(sorted(LEXICON))})")
    genders = espeak.variants()
    for variant in spec.variants:
        if variant not in genders:
            raise UserError(f"--variants: espeak-ng has no voice variant {variant!r} (e.g. f1-f5, m1-m8)")
    if not spec.languages or not spec.variants:
        raise UserError("--languages and --variants each need at least one value")
    return {v: genders[v] for v in spec.variants}


def lexicon_key(language: str) -> str:
    return language.split("-")[0].lower()


def draw_talkers(spec: SpeechSpec, genders: dict[str, str]) -> list[Talker]:
    """Every talker of every split. Within a split the languages take turns and
    the genders alternate, so each split has several languages and both genders."""
    by_gender: dict[str, list[str]] = {}
    for variant, gender in genders.items():
        by_gender.setdefault(gender, []).append(variant)
    gender_cycle = sorted(by_gender)
    taken: set[tuple[str, str, int]] = set()
    talkers = []
    for s, (split, n) in enumerate(spec.speakers.items()):
        rng = np.random.default_rng(np.random.SeedSequence([spec.seed, s, 0x74616C6B]))
        for i in range(n):
            gender = gender_cycle[i % len(gender_cycle)]
            language = spec.languages[(i // len(gender_cycle)) % len(spec.languages)]
            for _ in range(1000):  # a voice no other talker has, in any split
                variant = str(rng.choice(by_gender[gender]))
                pitch = int(rng.integers(*PITCH.get(gender, PITCH[""])))
                if (language, variant, pitch) not in taken:
                    break
            else:
                raise UserError(f"--{split}-speakers: {n} is more distinct talkers than the "
                                "languages and variants asked for can make")
            taken.add((language, variant, pitch))
            talkers.append(Talker(
                name=f"{split[:2]}{i:03d}-{language}-{variant}", split=split, language=language,
                variant=variant, gender=gender or "unknown", pitch=pitch,
                pitch_range=int(rng.integers(*PITCH_RANGE)), rate=int(rng.integers(*RATE_WPM))))
    return talkers


def sentences(spec: SpeechSpec, talker: Talker, index: int) -> list[str]:
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, index, 0x73656E74]))
    words = LEXICON[lexicon_key(talker.language)]
    out = []
    for _ in range(spec.utterances[talker.split]):
        parts = [str(rng.choice(words[k])) for k in ("subject", "verb", "object", "ending")]
        text = " ".join(parts)
        out.append(text[0].upper() + text[1:] + ".")
    return out


def _prepare(x: np.ndarray, rate: int, native: int) -> np.ndarray:
    """The engine's output at ``native`` Hz -> ``rate``, edge silence trimmed, at LEVEL_DB."""
    g = math.gcd(rate, native)
    y = resample_poly(x.astype(np.float64), rate // g, native // g)
    loud = np.flatnonzero(np.abs(y) > np.abs(y).max(initial=0.0) * 10 ** (TRIM_DB / 20))
    if loud.size:
        edge = round(EDGE_S * rate)
        y = y[max(0, loud[0] - edge) : loud[-1] + edge + 1]
    rms = float(np.sqrt(np.mean(y**2))) if y.size else 0.0
    if rms > 0:
        y *= 10 ** (LEVEL_DB / 20) / rms
    return y * min(1.0, PEAK / max(float(np.abs(y).max(initial=0.0)), 1e-12))


def make_corpus(out: str | Path, spec, workers: int = 0,
                log=lambda line: print(line, file=sys.stderr, flush=True)) -> dict:
    """Write the corpus of ``spec`` into ``out`` (see the module docstring); what was written.

    One run at a time per corpus: the run holds ``.OUT.lock`` beside OUT
    (masksep/locks.py); a second one says who holds it (UserError). Under the
    lock, the temp folders a killed run left beside OUT (``.OUT.tmp-<pid>``) are removed."""
    from glob import escape

    from masksep import locks

    out = Path(out).resolve()
    plan = spec.plan()  # a bad spec is refused before anything is made, the lock's folder included
    with locks.hold(out.parent / f".{out.name}.lock", "masksep data speech", out):
        for stale in out.parent.glob(f".{escape(out.name)}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)  # no live run holds them: we hold the lock
        return _make_corpus(out, spec, plan, workers, log)


def _make_corpus(out: Path, spec, plan: Plan, workers: int, log) -> dict:
    wanted = spec.to_dict()
    if out.exists():
        made = out / "corpus.json"
        if made.is_file() and json.loads(made.read_text()).get("spec") == wanted:
            log(f"speech: {out} already holds this corpus; nothing to do")
            return json.loads(made.read_text())
        if made.is_file() and json.loads(made.read_text()).get("spec", {}).get("format") != FORMAT:
            raise UserError(f"{out}: holds a corpus of an older masksep (format "
                            f"{json.loads(made.read_text()).get('spec', {}).get('format')!r}, not "
                            f"{FORMAT}); remove it to make this one")
        if out.is_file() or any(out.iterdir()):
            raise UserError(f"{out}: already holds something else (another corpus or other files); "
                            "remove it or pick another folder")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.monotonic()
    try:
        tmp.mkdir(parents=True)
        waves = _synthesise(plan, workers, log)
        info = _write(tmp, out, spec, plan, waves)
        info["seconds_to_make"] = round(time.monotonic() - t0, 1)
        (tmp / "corpus.json").write_text(json.dumps({"spec": wanted, **info}, indent=1) + "\n")
        if out.exists():
            out.rmdir()  # empty, checked above
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"speech: wrote {out} in {info['seconds_to_make']} s")
    return {"spec": wanted, **info}


def _synthesise(plan: Plan, workers: int, log) -> list[list[np.ndarray]]:
    """Every talker's waveforms, in worker processes (espeak-ng: a fresh one per
    talker, see masksep.espeak), in the talkers' order."""
    jobs = plan.jobs
    workers = workers or max(1, min(len(os.sched_getaffinity(0)), len(jobs)))
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch, no inherited state
    waves: list[list[np.ndarray]] = []
    step = max(1, len(jobs) // 10)
    t0, spoken = time.monotonic(), 0.0
    with ctx.Pool(workers, initializer=plan.initializer, initargs=plan.initargs,
                  maxtasksperchild=1 if plan.fresh_process else None) as pool:
        for i, result in enumerate(pool.imap(plan.speak, jobs), start=1):
            waves.append(result)
            spoken += sum(x.size for x in result) / plan.rate
            if i % step == 0 or i == len(jobs):
                log(f"speech: {i}/{len(jobs)} talkers spoken ({spoken:.0f} s of audio in "
                    f"{time.monotonic() - t0:.0f} s, {workers} worker(s))")
    return waves


def _csv(rows: list[list]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _write(root: Path, final: Path, spec, plan: Plan, waves: list[list[np.ndarray]]) -> dict:
    """Everything into ``root``, which becomes ``final`` (the CSVs name files there)."""
    talkers = plan.talkers
    seconds = {split: 0.0 for split in SPLITS}
    rows = [["speaker", "split", *plan.columns, "utterances", "seconds"]]
    names: dict[str, list[tuple[str, list[str]]]] = {split: [] for split in SPLITS}
    for rate in spec.rates:
        for talker, described, said in zip(talkers, plan.rows, waves, strict=True):
            utts, talker_s = [], 0.0
            for k, x in enumerate(said):
                y = _prepare(x, rate, plan.rate)
                name = f"{talker.name}-{k:03d}"
                path = root / "utterances" / f"wav{rate // 1000}k" / talker.split / talker.name / f"{name}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                audio.write_wav(path, y, rate)
                utts.append(name)
                talker_s += y.size / rate
            if rate == spec.rates[0]:
                seconds[talker.split] += talker_s
                names[talker.split].append((talker.name, utts))
                rows.append([talker.name, talker.split, *described, len(utts), round(talker_s, 2)])
    (root / "speakers.csv").write_text(_csv(rows))
    mixtures = {}
    for split, libri in SPLITS.items():
        pairs = _pairs(spec, split, names[split])
        mixtures[libri] = len(pairs)
        for rate in spec.rates:
            for mode in spec.modes:
                _mix(root, final, rate, mode, split, libri, pairs)
    n_talkers = {split: sum(t.split == split for t in talkers) for split in SPLITS}
    return {"engine": spec.engine, "speakers": n_talkers, "utterances": {s: sum(len(u) for _, u in names[s]) for s in SPLITS},
            "utterance_hours": {s: round(v / 3600, 3) for s, v in seconds.items()},
            "mixtures": mixtures, "languages": list(plan.languages), **plan.facts,
            "layouts": {"dynamic": [f"utterances/wav{r // 1000}k" for r in spec.rates],
                        "librimix": [f"wav{r // 1000}k/{m}" for r in spec.rates for m in spec.modes]}}


def _pairs(spec, split: str, talkers: list[tuple[str, list[str]]]) -> list[tuple]:
    """(speaker, utterance, gain) x 2 for each mixture: two talkers of the split.

    The mixtures are drawn without replacement from every unordered pair of
    utterances of two different talkers (each pair as likely as any other, so each
    pair of talkers in proportion to its utterances), so no two share their pair
    and a mixture's ID is unique; which of the two is source 1 is a coin's throw."""
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, list(SPLITS).index(split), 0x6D6978]))
    counts = [len(utts) for _, utts in talkers]
    couples = [(a, b) for a in range(len(talkers)) for b in range(a + 1, len(talkers))]
    sizes = np.array([counts[a] * counts[b] for a, b in couples], dtype=np.int64)
    ends = np.cumsum(sizes)
    n = spec.mixtures[split]
    if n > (int(ends[-1]) if len(ends) else 0):  # check_layout refuses this before any synthesis
        raise UserError(f"--{split}-mixtures: {n} is more than the distinct pairs of utterances")
    pairs = []
    for index in rng.choice(int(ends[-1]), size=n, replace=False) if n else []:
        c = int(np.searchsorted(ends, index, side="right"))
        within = int(index - (ends[c] - sizes[c]))
        a, b = couples[c]
        chosen = [(a, within // counts[b]), (b, within % counts[b])]
        if rng.integers(2):
            chosen.reverse()
        gains = rng.uniform(-GAIN_DB, GAIN_DB, 2)
        pairs.append(tuple((talkers[t][0], talkers[t][1][u], float(g))
                           for (t, u), g in zip(chosen, gains, strict=True)))
    return pairs


def _mix(root: Path, final: Path, rate: int, mode: str, split: str, libri: str,
         pairs: list[tuple]) -> None:
    """One LibriMix split at one rate and mode; its CSV names the files where they will be
    (absolute paths, as LibriMix writes them)."""
    base = root / f"wav{rate // 1000}k" / mode
    utt_root = root / "utterances" / f"wav{rate // 1000}k" / split
    rows = [["mixture_ID", "mixture_path", "source_1_path", "source_2_path", "length"]]
    for sub in ("mix_clean", "s1", "s2"):
        (base / libri / sub).mkdir(parents=True, exist_ok=True)
    for pair in pairs:
        srcs = [audio.read_mono(utt_root / spk / f"{utt}.wav", rate) * 10 ** (g / 20)
                for spk, utt, g in pair]
        n = min(len(s) for s in srcs) if mode == "min" else max(len(s) for s in srcs)
        srcs = [np.pad(s[:n], (0, n - min(n, len(s)))) for s in srcs]
        mix = srcs[0] + srcs[1]
        scale = min(1.0, PEAK / max(float(np.abs(mix).max()), *(float(np.abs(s).max()) for s in srcs), 1e-12))
        mix_id = "_".join(utt for _, utt, _ in pair)
        paths = [base / libri / sub / f"{mix_id}.wav" for sub in ("mix_clean", "s1", "s2")]
        for path, x in zip(paths, [mix, *srcs], strict=True):
            audio.write_wav(path, x * scale, rate)
        rows.append([mix_id, *(str(final / p.relative_to(root)) for p in paths), n])
    meta = base / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / f"mixture_{libri}_mix_clean.csv").write_text(_csv(rows))
