"""The Feast CLI's view of this repo (``cd feature_repo && feast apply`` / ``feast ui``): the module-level Feast
objects Feast discovers, built once by ``features.build_definitions`` from the environment's settings
(``PPM_ARTIFACTS_DIR``, ``PPM_PROFILE``, ``PPM_CONFIG``, ...; :meth:`ppm_platform.config.Settings.from_env`).

The library never imports this file: it calls ``build_definitions`` with its own settings
(``ppm_platform.feature_store.apply_definitions``).
"""

from __future__ import annotations

from features import build_definitions  # Feast imports the repo's files with feature_repo/ on sys.path

from ppm_platform.config import Settings

_SETTINGS = Settings.from_env()
_SETTINGS.feast_dir.mkdir(parents=True, exist_ok=True)  # Feast creates only the registry's last folder
_DEFS = build_definitions(_SETTINGS)

user, item = _DEFS["entities"]
(item_multimodal, item_profile, user_profile, user_recent_items,
 ppm_item_cache, ppm_user_cache, item_stats, user_stats) = _DEFS["feature_views"]
urm_user, urm_item, urm_training, idrec_user = _DEFS["feature_services"]
(behavior_sequences_source, item_multimodal_source, item_profile_source, item_stats_source, ppm_item_cache_source,
 ppm_user_cache_source, user_profile_source, user_stats_source) = _DEFS["data_sources"]
item_multimodal_push, item_profile_push, ppm_item_cache_push = _DEFS["push_sources"]
