"""The built-in synthetic dataset: chest-radiograph-like images with findings drawn in, and reports
written from the same findings with varied phrasing, negation, uncertainty and laterality.

Everything is a pure function of the seed. A study is first drawn as a structured `Study` (which
findings, which side, how certain); the image and the report are both rendered from that structure,
and the ground-truth labels follow from the sentences actually written, so the three always agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image
from scipy.ndimage import gaussian_filter

from mtcxr.data.datasets.assembly import IngestResult
from mtcxr.data.datasets.splits import DEFAULT_FRACTIONS, assign_patient_splits, check_split_hygiene
from mtcxr.data.text import section_text
from mtcxr.tables import CHEXPERT_LABELS, abnormal_from_no_finding, empty_table

# Per-study prevalence of each drawn finding. The product of (1 - p) over the pathologies
# (all but support devices) is about 0.39: the share of normal studies, as in MIMIC-CXR.
PREVALENCE = {
    "cardiomegaly": 0.18,
    "pleural_effusion": 0.20,
    "consolidation": 0.12,
    "edema": 0.10,
    "atelectasis": 0.14,
    "pneumothorax": 0.06,
    "lung_lesion": 0.07,
    "support_devices": 0.15,
}
UNCERTAIN_RATE = 0.15  # share of present findings the radiologist hedges on (drawn fainter)
SIDES = ("right", "left")
ZONES = ("upper", "mid", "lower")
LOBE = {"upper": "upper lobe", "mid": "mid lung", "lower": "lower lobe"}
DEVICES = ("ett", "picc", "pacemaker")


@dataclass(frozen=True)
class Site:
    """How one hospital acquires and writes: the same findings, another look and another phrasing.

    An image is blurred (sigma = blur × size / 128), scaled by the patient's brightness, given Gaussian
    noise of sd `noise`, clipped to [0, 1], then mapped through `offset + gain · x ** gamma` (and
    clipped). Site `a` is the demo's own data; `b` is flatter (lower contrast, lifted blacks), noisier
    and softer, and its radiologists write telegraphically ("No evidence of ...", no "There is ...") with
    a fixed preamble: an external set with a shift in both modalities (docs/methods.md, The synthetic demo).
    """

    blur: float = 1.0
    noise: float = 0.035
    gain: float = 1.0
    offset: float = 0.0
    gamma: float = 1.0
    phrasing: str = "a"


SITES = {
    "a": Site(),
    "b": Site(blur=1.6, noise=0.06, gain=0.7, offset=0.18, gamma=0.7, phrasing="b"),
}


@dataclass
class Finding:
    name: str
    certain: bool
    side: str = "right"  # patient side; "bilateral" for effusion/atelectasis
    zone: str = "lower"
    severity: str = "small"
    device: str = ""


@dataclass
class Anatomy:
    thorax_width: float
    lung_height: float
    heart_ratio: float
    shift: float
    brightness: float
    rib_phase: float


@dataclass
class Study:
    study_id: str
    patient_id: str
    anatomy: Anatomy
    findings: list[Finding]
    view: str
    has_lateral: bool
    seed: int
    sentences: list[tuple[str, dict[str, int]]] = field(default_factory=list)
    impression: list[tuple[str, dict[str, int]]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Drawing studies


def draw_anatomy(rng: np.random.Generator) -> Anatomy:
    return Anatomy(
        thorax_width=rng.uniform(0.62, 0.78),
        lung_height=rng.uniform(0.50, 0.62),
        heart_ratio=rng.uniform(0.40, 0.48),
        shift=rng.uniform(-0.03, 0.03),
        brightness=rng.uniform(0.85, 1.15),
        rib_phase=rng.uniform(0, 2 * np.pi),
    )


def draw_findings(rng: np.random.Generator, view: str) -> list[Finding]:
    findings = []
    for name, prevalence in PREVALENCE.items():
        if name == "support_devices" and view == "AP":
            prevalence *= 2.0  # portable AP films are mostly of lined, intubated patients
        if rng.random() >= prevalence:
            continue
        certain = name == "support_devices" or rng.random() >= UNCERTAIN_RATE
        side = SIDES[rng.integers(2)]
        if name in ("pleural_effusion", "atelectasis", "edema") and rng.random() < 0.3:
            side = "bilateral"
        zone = ZONES[rng.integers(3)] if name in ("consolidation", "lung_lesion") else "lower"
        severity = ("small", "moderate", "large")[rng.choice(3, p=[0.5, 0.35, 0.15])]
        device = DEVICES[rng.integers(3)] if name == "support_devices" else ""
        findings.append(Finding(name, certain, side, zone, severity, device))
    return findings


def draw_studies(n_studies: int, n_patients: int, seed: int, lateral_fraction: float, prefix: str) -> list[Study]:
    """Draw `n_studies` studies spread over `n_patients` patients (every patient has at least one)."""
    rng = np.random.default_rng(seed)
    n_patients = min(n_patients, n_studies)
    owners = np.concatenate([np.arange(n_patients), rng.integers(0, n_patients, n_studies - n_patients)])
    owners.sort()
    anatomies = [draw_anatomy(rng) for _ in range(n_patients)]
    studies = []
    for index, owner in enumerate(owners):
        view = "PA" if rng.random() < 0.7 else "AP"
        study = Study(
            study_id=f"{prefix}s{index:06d}",
            patient_id=f"{prefix}p{owner:06d}",
            anatomy=anatomies[owner],
            findings=draw_findings(rng, view),
            view=view,
            has_lateral=bool(rng.random() < lateral_fraction),
            seed=int(rng.integers(2**31)),
        )
        write_report(study, np.random.default_rng(study.seed))
        studies.append(study)
    return studies


# ---------------------------------------------------------------------------------------------
# Reports: every template carries the labels it implies, so ground truth follows the text.

SEVERITY_WORDS = {"small": ["small", "trace", "small"], "moderate": ["moderate", "moderate-sized"], "large": ["large"]}
HEDGES = ["Possible {x}.", "{X} cannot be excluded.", "Findings may represent {x}.", "Questionable {x}."]


def _side_phrase(finding: Finding) -> str:
    return "bilateral" if finding.side == "bilateral" else finding.side


def _positive_sentence(finding: Finding, rng: np.random.Generator) -> tuple[str, dict[str, int]]:
    pick = lambda options: options[rng.integers(len(options))]  # noqa: E731 - local shorthand
    size = pick(SEVERITY_WORDS[finding.severity])
    side = _side_phrase(finding)
    name = finding.name
    if not finding.certain:
        phrases = {
            "cardiomegaly": ("cardiomegaly", {"cardiomegaly": -1}),
            "pleural_effusion": (f"{side} pleural effusion", {"pleural_effusion": -1}),
            "consolidation": (f"{side} {LOBE[finding.zone]} consolidation", {"consolidation": -1}),
            "edema": ("mild pulmonary edema", {"edema": -1}),
            "atelectasis": (f"{side} basilar atelectasis", {"atelectasis": -1}),
            "pneumothorax": (f"small {side} apical pneumothorax", {"pneumothorax": -1}),
            "lung_lesion": (f"nodule in the {side} {LOBE[finding.zone]}", {"lung_lesion": -1}),
        }
        phrase, labels = phrases[name]
        hedge = pick(HEDGES)
        return hedge.format(x=phrase, X=phrase[0].upper() + phrase[1:]), labels
    if name == "cardiomegaly":
        options = [
            ("The heart is enlarged.", {}),
            ("Cardiomegaly is present.", {}),
            (f"{size.capitalize()} enlargement of the cardiac silhouette.", {}),
            ("The cardiac silhouette is enlarged.", {}),
        ]
        sentence, extra = pick(options)
        return sentence, {"cardiomegaly": 1, **extra}
    if name == "pleural_effusion":
        plural = "effusions" if side == "bilateral" else "effusion"
        options = [
            f"{size.capitalize()} {side} pleural {plural}.",
            f"There is a {size} {side} pleural {plural}.",
            f"{size.capitalize()} {side} pleural {plural} with blunting of the costophrenic angle.",
        ]
        return pick(options), {"pleural_effusion": 1}
    if name == "consolidation":
        lobe = LOBE[finding.zone]
        options = [
            (f"Focal consolidation in the {side} {lobe}.", {"consolidation": 1}),
            (f"There is {side} {lobe} airspace consolidation.", {"consolidation": 1}),
            (
                f"Dense opacity in the {side} {lobe} consistent with consolidation.",
                {"consolidation": 1, "lung_opacity": 1},
            ),
        ]
        return pick(options)
    if name == "edema":
        options = [
            "Mild pulmonary edema.",
            "Interstitial pulmonary edema with vascular congestion.",
            "Perihilar haziness consistent with pulmonary edema.",
        ]
        return pick(options), {"edema": 1}
    if name == "atelectasis":
        where = "bibasilar" if side == "bilateral" else f"{side} basilar"
        options = [
            f"{where.capitalize()} atelectasis.",
            f"Linear {where} atelectasis.",
            f"Subsegmental {where} atelectasis.",
        ]
        return pick(options), {"atelectasis": 1}
    if name == "pneumothorax":
        options = [f"{size.capitalize()} {side} apical pneumothorax.", f"There is a {size} {side} pneumothorax."]
        return pick(options), {"pneumothorax": 1}
    if name == "lung_lesion":
        lobe = LOBE[finding.zone]
        centimetres = rng.integers(8, 25) / 10
        options = [
            f"A {centimetres:.1f} cm nodule in the {side} {lobe}.",
            f"There is a rounded nodule in the {side} {lobe}.",
            f"Well-circumscribed {side} {lobe} nodule measuring {centimetres:.1f} cm.",
        ]
        return pick(options), {"lung_lesion": 1}
    if name == "support_devices":
        options = {
            "ett": [
                "Endotracheal tube terminates 4 cm above the carina.",
                "An endotracheal tube is in standard position.",
            ],
            "picc": ["Right PICC line with tip in the lower SVC.", "A right-sided PICC terminates in the SVC."],
            "pacemaker": [
                "Left chest wall pacemaker with leads in the right heart.",
                "Dual-lead pacemaker is in place.",
            ],
        }[finding.device]
        return pick(options), {"support_devices": 1}
    raise ValueError(f"unknown finding {name}")


NEGATIONS = {
    "cardiomegaly": ["Heart size is normal.", "The cardiac silhouette is normal in size.", "No cardiomegaly."],
    "pleural_effusion": ["No pleural effusion.", "There is no pleural effusion.", "No effusion is seen."],
    "pneumothorax": ["No pneumothorax.", "There is no pneumothorax."],
    "consolidation": ["No focal consolidation.", "There is no consolidation."],
    "edema": ["No pulmonary edema.", "There is no evidence of edema."],
}
NEUTRAL = [
    "The mediastinal contours are unremarkable.",
    "The hilar contours are normal.",
    "The visualized osseous structures are unremarkable.",
    "Lung volumes are normal.",
]
NORMAL_IMPRESSIONS = [
    "No acute cardiopulmonary process.",
    "No acute cardiopulmonary abnormality.",
    "Normal chest radiograph.",
    "No acute intrathoracic process.",
]


def write_report(study: Study, rng: np.random.Generator) -> None:
    """Fill `study.sentences` (findings section) and `study.impression` with labelled sentences."""
    present = {finding.name for finding in study.findings}
    sentences = [_positive_sentence(finding, rng) for finding in study.findings]
    absent = [name for name in NEGATIONS if name not in present]
    if "pleural_effusion" in absent and "pneumothorax" in absent and rng.random() < 0.5:
        sentences.append(("No pleural effusion or pneumothorax.", {"pleural_effusion": 0, "pneumothorax": 0}))
        absent = [name for name in absent if name not in ("pleural_effusion", "pneumothorax")]
    for name in absent:
        if rng.random() < 0.55:
            options = NEGATIONS[name]
            sentences.append((options[rng.integers(len(options))], {name: 0}))
    if rng.random() < 0.5:
        sentences.append((NEUTRAL[rng.integers(len(NEUTRAL))], {}))
    order = rng.permutation(len(sentences))
    study.sentences = [sentences[i] for i in order]

    pathologies = [finding for finding in study.findings if finding.name != "support_devices"]
    if not pathologies:
        study.impression = [(NORMAL_IMPRESSIONS[rng.integers(len(NORMAL_IMPRESSIONS))], {"no_finding": 1})]
        return
    main = pathologies[rng.integers(len(pathologies))]
    impression = [_positive_sentence(main, rng)]
    if main.name == "consolidation" and main.certain and rng.random() < 0.5:
        impression.append(("Findings are concerning for pneumonia.", {"pneumonia": -1}))
    study.impression = impression


def study_labels(study: Study) -> dict[str, int | None]:
    """Ground-truth CheXpert labels implied by the sentences of the report.

    A positive anywhere beats an uncertain, which beats a negative, as in CheXpert's aggregation.
    """
    labels: dict[str, int | None] = {name: None for name in CHEXPERT_LABELS}
    rank = {1: 3, -1: 2, 0: 1}
    for _, implied in study.sentences + study.impression:
        for name, value in implied.items():
            current = labels[name]
            if current is None or rank[value] > rank[current]:
                labels[name] = value
    pathology_flags = [labels[name] for name in CHEXPERT_LABELS if name not in ("no_finding", "support_devices")]
    labels["no_finding"] = None if any(value in (1, -1) for value in pathology_flags) else 1
    return labels


# Site b's style: sentence by sentence, so every sentence keeps the labels it implied (the rewrites only
# reword; tests/test_synthetic.py checks that mtcxr's labeler reads the same labels from both styles).
SITE_B_REWRITES = [
    (r"^There is no evidence of (.+)\.$", r"No evidence of \1."),
    (r"^There is no (.+)\.$", r"No evidence of \1."),
    (r"^No (?!evidence)(.+)\.$", r"No evidence of \1."),
    (r"^There is an? (.+)\.$", r"\1."),
    (r"^There is (.+)\.$", r"\1."),
    (r"^The heart is enlarged\.$", "Enlarged cardiac silhouette."),
    (r"^Heart size is normal\.$", "Normal heart size."),
    (r"^The cardiac silhouette is normal in size\.$", "Normal cardiac silhouette."),
    (r"^The (mediastinal|hilar) contours are (\w+)\.$", r"\1 contours \2."),
    (r"^Lung volumes are normal\.$", "Normal lung volumes."),
    (r"^The visualized osseous structures are unremarkable\.$", "Osseous structures unremarkable."),
]
SITE_B_PREAMBLE = "PA and lateral views of the chest. Comparison: none."


def site_sentence(sentence: str, phrasing: str) -> str:
    """A sentence of the synthetic report as the site writes it."""
    if phrasing == "a":
        return sentence
    for pattern, replacement in SITE_B_REWRITES:
        rewritten = re.sub(pattern, replacement, sentence)
        if rewritten != sentence:
            return rewritten[0].upper() + rewritten[1:]
    return sentence


# ---------------------------------------------------------------------------------------------
# Images


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _side_x(side: str, centre: float, offset: float) -> float:
    # Radiographs are viewed as if facing the patient: the patient's right is on the image's left.
    return centre - offset if side == "right" else centre + offset


def render_frontal(study: Study, size: int, site: Site = SITES["a"]) -> np.ndarray:
    """Render the frontal radiograph of `study`, acquired at `site`, as a float image in [0, 1]."""
    rng = np.random.default_rng(study.seed + 1)
    anatomy = study.anatomy
    yy, xx = np.mgrid[0:size, 0:size] / size
    centre = 0.5 + anatomy.shift
    image = np.full((size, size), 0.08)
    image[_ellipse(yy, xx, 0.55, centre, 0.55, anatomy.thorax_width / 2 + 0.08)] = 0.42  # soft tissue
    lung_top, lung_bottom = 0.18, 0.18 + anatomy.lung_height
    lung_cy, lung_ry = (lung_top + lung_bottom) / 2, (lung_bottom - lung_top) / 2
    lung_rx = anatomy.thorax_width / 4.6
    lungs = {
        side: _ellipse(yy, xx, lung_cy, _side_x(side, centre, anatomy.thorax_width / 4.1), lung_ry, lung_rx)
        for side in SIDES
    }
    lung_mask = lungs["right"] | lungs["left"]
    image[lung_mask] = 0.16
    ribs = 0.06 * (np.sin(yy * 55 + anatomy.rib_phase + 6 * (xx - centre) ** 2) > 0.55)
    image += ribs * lung_mask
    heart_ratio = anatomy.heart_ratio * (1.06 if study.view == "AP" else 1.0)
    names = {finding.name: finding for finding in study.findings}
    if "cardiomegaly" in names:
        heart_ratio *= 1.38 if names["cardiomegaly"].certain else 1.18
    heart_rx = heart_ratio * anatomy.thorax_width / 2
    heart = _ellipse(yy, xx, lung_bottom - 0.1, centre + 0.04, 0.13, heart_rx)
    image[heart] = 0.7
    image[_ellipse(yy, xx, 0.3, centre, 0.2, 0.05)] = 0.62  # mediastinum
    image[(yy > lung_bottom + 0.02 * np.cos((xx - centre) * 9)) & (np.abs(xx - centre) < anatomy.thorax_width / 2)] = (
        0.75
    )

    for finding in study.findings:
        strength = 1.0 if finding.certain else 0.55
        sides = SIDES if finding.side == "bilateral" else (finding.side,)
        for side in sides:
            lung = lungs[side]
            lx = _side_x(side, centre, anatomy.thorax_width / 4.1)
            if finding.name == "pleural_effusion":
                depth = {"small": 0.1, "moderate": 0.18, "large": 0.3}[finding.severity]
                level = lung_bottom - depth * anatomy.lung_height * 1.6
                # The meniscus climbs laterally, towards the chest wall.
                meniscus = level - 0.05 * ((xx - lx) / lung_rx) * (1 if side == "left" else -1)
                fluid = lung & (yy > meniscus) & ~heart
                image[fluid] = np.maximum(image[fluid], 0.16 + 0.5 * strength)
            elif finding.name == "consolidation":
                cy = {"upper": lung_top + 0.12, "mid": lung_cy, "lower": lung_bottom - 0.12}[finding.zone]
                blob = np.exp(-(((yy - cy) / 0.07) ** 2 + ((xx - lx) / 0.06) ** 2))
                image += 0.45 * strength * blob * lung
            elif finding.name == "edema":
                haze = np.exp(-(((yy - lung_cy) / 0.16) ** 2 + ((xx - lx) / 0.1) ** 2))
                streaks = 0.5 + 0.5 * np.sin(xx * 140 + yy * 40)
                image += 0.3 * strength * haze * (0.6 + 0.4 * streaks) * lung
            elif finding.name == "atelectasis":
                band = np.abs(yy - (lung_bottom - 0.07) - 0.03 * (xx - lx)) < 0.012
                image[band & lung] += 0.4 * strength
            elif finding.name == "pneumothorax":
                apex = lung & (yy < lung_top + {"small": 0.12, "moderate": 0.2, "large": 0.3}[finding.severity])
                image[apex] = 0.03 + 0.1 * (1 - strength)
            elif finding.name == "lung_lesion":
                cy = {"upper": lung_top + 0.1, "mid": lung_cy, "lower": lung_bottom - 0.14}[finding.zone]
                image[_ellipse(yy, xx, cy, lx, 0.03, 0.03)] += 0.5 * strength
    if "support_devices" in names:
        device = names["support_devices"].device
        if device == "ett":
            image[(np.abs(xx - centre) < 0.008) & (yy > 0.0) & (yy < 0.3)] = 0.95
        elif device == "picc":
            path = np.abs(yy - (0.22 + 0.9 * (xx - (centre - 0.35)) ** 2)) < 0.008
            image[path & (xx < centre) & (xx > centre - 0.4)] = 0.95
        else:
            image[_ellipse(yy, xx, 0.17, centre + 0.28, 0.04, 0.06)] = 0.98
            lead = np.abs(yy - 0.17 - 0.9 * (centre + 0.28 - xx)) < 0.006
            image[lead & (xx < centre + 0.28) & (xx > centre)] = 0.95
    return _finish(image, anatomy, rng, site)


def render_lateral(study: Study, size: int, site: Site = SITES["a"]) -> np.ndarray:
    """Render the lateral view: one superimposed lung field, heart anterior, effusion posterior."""
    rng = np.random.default_rng(study.seed + 2)
    anatomy = study.anatomy
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.full((size, size), 0.08)
    image[_ellipse(yy, xx, 0.55, 0.5, 0.55, 0.36)] = 0.42
    lung = _ellipse(yy, xx, 0.45, 0.5, anatomy.lung_height / 2 + 0.02, 0.27)
    image[lung] = 0.2
    names = {finding.name: finding for finding in study.findings}
    heart_r = 0.14 * (1.35 if "cardiomegaly" in names else 1.0)
    image[_ellipse(yy, xx, 0.6, 0.36, heart_r, heart_r * 0.9)] = 0.65
    image[yy > 0.45 + anatomy.lung_height / 2] = 0.72
    if "pleural_effusion" in names:
        image[lung & (yy > 0.62) & (xx > 0.55)] += 0.45
    if "consolidation" in names:
        image += 0.35 * np.exp(-(((yy - 0.5) / 0.08) ** 2 + ((xx - 0.55) / 0.08) ** 2)) * lung
    if "support_devices" in names:
        image[(np.abs(xx - 0.45) < 0.008) & (yy < 0.35)] = 0.95
    return _finish(image, anatomy, rng, site)


def _finish(image: np.ndarray, anatomy: Anatomy, rng: np.random.Generator, site: Site) -> np.ndarray:
    image = gaussian_filter(image, sigma=site.blur * image.shape[0] / 128)
    image = np.clip(image * anatomy.brightness + rng.normal(0, site.noise, image.shape), 0.0, 1.0)
    if site.gain == 1.0 and site.offset == 0.0 and site.gamma == 1.0:
        return image  # site a: the demo's images, bit for bit as before sites existed
    return np.clip(site.offset + site.gain * image**site.gamma, 0.0, 1.0)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (image * 255).round().astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Tables


def report_sections(study: Study, phrasing: str = "a") -> tuple[str, str]:
    findings = " ".join(site_sentence(sentence, phrasing) for sentence, _ in study.sentences)
    impression = " ".join(site_sentence(sentence, phrasing) for sentence, _ in study.impression)
    if phrasing == "b":
        findings = f"{SITE_B_PREAMBLE} {findings}".strip()
    return findings, impression


def read_synthetic(dataset_cfg: dict, text_section: str, seed: int, work_dir: str | None) -> IngestResult:
    """Generate the synthetic study, write its PNGs under `work_dir`, return the contract tables."""
    if work_dir is None:
        raise ValueError("the synthetic dataset needs a work_dir to write its images into")
    options = dataset_cfg.get("synthetic", {})
    size = int(options.get("image_size", 128))
    site_name = options.get("site", "a")
    if site_name not in SITES:
        raise ValueError(f"dataset.synthetic.site is {site_name!r}; expected one of {sorted(SITES)}")
    site = SITES[site_name]
    # Another site is another hospital: other patients (its own draw and id prefix), never the main set's.
    other_site = site_name != "a"
    studies = draw_studies(
        n_studies=int(options.get("n_studies", 1500)),
        n_patients=int(options.get("n_patients", 1000)),
        seed=seed + 1_000_003 * other_site,
        lateral_fraction=float(options.get("lateral_fraction", 0.4)),
        prefix=f"syn{site_name}-" if other_site else "syn-",
    )
    splits = assign_patient_splits(
        [s.patient_id for s in studies], dataset_cfg.get("split_fractions") or DEFAULT_FRACTIONS, seed
    )
    image_dir = Path(work_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    study_rows, image_rows, label_rows = [], [], []
    for study in studies:
        findings, impression = report_sections(study, site.phrasing)
        split = splits[study.patient_id]
        study_rows.append(
            {
                "study_id": study.study_id,
                "patient_id": study.patient_id,
                "split": split,
                "findings": findings,
                "impression": impression,
                # The contract's `report` is never null: a blank section is an empty text here.
                "report": section_text(findings, impression, text_section) or "",
                "dataset": f"synthetic_{site_name}" if other_site else "synthetic",
            }
        )
        views = [(study.view, render_frontal)] + ([("LATERAL", render_lateral)] if study.has_lateral else [])
        for view, render in views:
            image_id = f"{study.study_id}-{view.lower()}"
            path = image_dir / f"{image_id}.png"
            Image.fromarray(to_uint8(render(study, size, site)), mode="L").save(path, compress_level=1)
            image_rows.append(
                {
                    "image_id": image_id,
                    "study_id": study.study_id,
                    "patient_id": study.patient_id,
                    "split": split,
                    "view": view,
                    "path": str(path),
                    "width": size,
                    "height": size,
                }
            )
        label_rows.append({"study_id": study.study_id, **study_labels(study)})
    studies_table = pl.DataFrame(study_rows)
    check_split_hygiene(studies_table)
    labels = pl.DataFrame(label_rows, schema={"study_id": pl.String, **{n: pl.Int8 for n in CHEXPERT_LABELS}})
    labels = labels.with_columns(abnormal=abnormal_from_no_finding(pl.col("no_finding")), source=pl.lit("dataset"))
    return IngestResult(
        studies=studies_table,
        images=pl.DataFrame(image_rows),
        rejects=empty_table("rejects"),
        labels=labels,
    )


def pretraining_pairs(
    n_studies: int, seed: int, size: int, lateral_fraction: float = 0.4
) -> tuple[np.ndarray, list[str]]:
    """Image-report pairs from a synthetic split of its own, for pretraining the demo backbone.

    The id prefix and seed differ from the study's, so no pretraining pair is a study image.
    """
    studies = draw_studies(n_studies, max(1, n_studies * 2 // 3), seed + 10_007, lateral_fraction, prefix="pre-")
    images, reports = [], []
    for study in studies:
        report = section_text(*report_sections(study), "both") or ""
        images.append(to_uint8(render_frontal(study, size)))
        reports.append(report)
        if study.has_lateral:
            images.append(to_uint8(render_lateral(study, size)))
            reports.append(report)
    return np.stack(images), reports
