"""The contenders of bench/mirror_bench.py other than `connector run`: small scripts, each
run as a whole process (``python -m bench.mirror.NAME SOURCE OUT``)."""
