"""What is searched: declarative spaces (YAML presets or inline mappings) and their Optuna form."""

from search_spaces._convert import load_preset, midpoint, parse_space, preset_names, to_optuna

__all__ = ["load_preset", "midpoint", "parse_space", "preset_names", "to_optuna"]
