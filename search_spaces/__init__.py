"""What is searched: declarative spaces (YAML presets or inline mappings) and their Optuna form."""

from search_spaces._convert import (condition_of, domain_of, is_active, load_preset, midpoint, parse_space,
                                    preset_names, representative, sample, to_optuna)

__all__ = ["condition_of", "domain_of", "is_active", "load_preset", "midpoint", "parse_space", "preset_names",
           "representative", "sample", "to_optuna"]
