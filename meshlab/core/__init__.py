"""The bottom layer: small, standard-library-only facts and helpers every other part uses
(flood sizes, dataplane arms, CPU counters, atomic writes). Nothing here imports the rest."""
