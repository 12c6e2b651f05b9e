# Reference values for src/domain/predict.rs: a BG/NBD fit plus a Gamma-Gamma fit and each
# customer's predicted purchases, expected average profit and 12-month value, as the Python
# `lifetimes` package computes them.
#
# Versions used (Python 3.11.7, a venv with only these from PyPI):
#   Lifetimes==0.11.3 numpy==1.26.4 scipy==1.11.4 pandas==1.5.3 autograd==1.6.2 dill==0.4.1
#   python-dateutil==2.9.0.post0
#   python3 -m venv /tmp/lt && /tmp/lt/bin/pip install Lifetimes==0.11.3 numpy==1.26.4 \
#       scipy==1.11.4 pandas==1.5.3 autograd==1.6.2 python-dateutil==2.9.0.post0
#   (numpy 2 / pandas 2+ are too new for lifetimes 0.11.3.)
# Run: /tmp/lt/bin/python bgnbd.py > bgnbd.out
#
# What lifetimes does (read from its source):
# - BetaGeoFitter.fit scales recency and T by 1/max(T), then minimises the mean negative
#   log-likelihood over log(r, alpha, a, b) with scipy.optimize.minimize(method=None, jac=True,
#   tol=1e-7), which is BFGS (no bounds) with autograd's gradient, gtol=1e-7 (max-norm),
#   maxiter=200*4, from log-parameters 0.1 each; alpha is then divided by the scale. A fit
#   whose BFGS reports no success raises ConvergenceError.
# - GammaGammaFitter.fit: the same BFGS over log(p, q, v), from 0.1 each, on unscaled data.
# - customer_lifetime_value(time=12, discount_rate=0.01, freq="D"): 12 monthly steps of 30
#   days; step i adds m' * (E[X(30i)] - E[X(30(i-1))]) / 1.01^i, where m' is the Gamma-Gamma
#   expected average profit (for frequency 0 the population mean p*v/(q-1)).
#
# The data: 40 customers drawn once from a BG/NBD + Gamma-Gamma process and written out
# here as (frequency, recency, T, monetary_value), in days; frequency counts repeat purchases,
# recency is the age at the last purchase, T the age at the end of observation and
# monetary_value the mean value of the repeat purchases (0 when there are none).
import sys
import warnings

warnings.simplefilter("ignore")

from importlib.metadata import version

import numpy
import pandas as pd
import scipy
import lifetimes
from lifetimes import BetaGeoFitter, GammaGammaFitter

CUSTOMERS = [
    (4, 394.0, 409.0, 1209.01),
    (1, 490.0, 513.0, 107.40),
    (10, 249.0, 449.0, 379.88),
    (4, 320.0, 393.0, 508.00),
    (2, 352.0, 406.0, 156.03),
    (0, 0.0, 63.0, 0.00),
    (4, 27.0, 418.0, 359.79),
    (1, 25.0, 459.0, 230.82),
    (3, 55.0, 79.0, 290.31),
    (1, 103.0, 140.0, 78.80),
    (0, 0.0, 228.0, 0.00),
    (2, 70.0, 447.0, 833.07),
    (1, 22.0, 181.0, 498.64),
    (4, 64.0, 76.0, 292.76),
    (0, 0.0, 148.0, 0.00),
    (0, 0.0, 84.0, 0.00),
    (4, 236.0, 291.0, 232.23),
    (0, 0.0, 533.0, 0.00),
    (13, 448.0, 504.0, 243.23),
    (2, 119.0, 139.0, 413.88),
    (0, 0.0, 480.0, 0.00),
    (1, 65.0, 451.0, 268.64),
    (4, 375.0, 433.0, 259.19),
    (4, 168.0, 179.0, 209.53),
    (27, 405.0, 481.0, 168.85),
    (1, 76.0, 133.0, 172.75),
    (2, 59.0, 428.0, 427.97),
    (1, 24.0, 323.0, 204.55),
    (1, 264.0, 369.0, 185.83),
    (1, 112.0, 115.0, 148.12),
    (1, 69.0, 88.0, 1449.92),
    (9, 406.0, 463.0, 249.67),
    (1, 17.0, 248.0, 70.81),
    (9, 459.0, 481.0, 260.41),
    (13, 232.0, 281.0, 567.48),
    (18, 183.0, 456.0, 167.56),
    (0, 0.0, 84.0, 0.00),
    (0, 0.0, 236.0, 0.00),
    (1, 2.0, 244.0, 132.02),
    (4, 41.0, 60.0, 290.62),
]


def g(x):
    return repr(float(x))


def main():
    df = pd.DataFrame(CUSTOMERS, columns=["frequency", "recency", "T", "monetary_value"])
    f, r, T, m = df["frequency"], df["recency"], df["T"], df["monetary_value"]

    bgf = BetaGeoFitter(penalizer_coef=0.0).fit(f, r, T)
    repeat = df[f > 0]
    ggf = GammaGammaFitter(penalizer_coef=0.0).fit(repeat["frequency"], repeat["monetary_value"])

    purchases = bgf.conditional_expected_number_of_purchases_up_to_time(365, f, r, T)
    profit = ggf.conditional_expected_average_profit(f, m)
    clv = ggf.customer_lifetime_value(bgf, f, r, T, m, time=12, freq="D", discount_rate=0.01)

    print(f"# python {sys.version.split()[0]} lifetimes {lifetimes.__version__} numpy {numpy.__version__} "
          f"scipy {scipy.__version__} pandas {pd.__version__} autograd {version('autograd')}")
    print("bgnbd r alpha a b", *map(g, bgf.params_[["r", "alpha", "a", "b"]]))
    # the mean negative log-likelihood at the optimum, on recency and T scaled by 1/max(T)
    print("bgnbd mean_nll", g(bgf._negative_log_likelihood_))
    print("gamma_gamma p q v", *map(g, ggf.params_[["p", "q", "v"]]))
    print("gamma_gamma mean_nll", g(ggf._negative_log_likelihood_))
    print("# i frequency recency T monetary_value purchases_365d expected_average_profit clv_12m")
    for i, (c, e, p, v) in enumerate(zip(CUSTOMERS, purchases, profit, clv)):
        print(i, *map(g, c), g(e), g(p), g(v))


if __name__ == "__main__":
    main()
