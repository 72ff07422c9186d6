"""Checks on the training group: validation AUC above chance for the Base and the URM."""

from dagster_project.check_factories import valid_auc_above_chance_check

base_valid_auc_above_chance = valid_auc_above_chance_check("base_model", "base_valid_auc_above_chance", "Base (IDRec)")
urm_valid_auc_above_chance = valid_auc_above_chance_check("urm_model", "urm_valid_auc_above_chance", "URM")
