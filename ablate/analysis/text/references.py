"""BibTeX entries of the works methods.md may cite; references.bib gets those a run used, in order of citation."""
from __future__ import annotations

import re

ENTRIES = {
    "he2016deep": """@inproceedings{he2016deep,
  author = {He, Kaiming and Zhang, Xiangyu and Ren, Shaoqing and Sun, Jian},
  title = {Deep Residual Learning for Image Recognition},
  booktitle = {Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages = {770--778},
  year = {2016},
  doi = {10.1109/CVPR.2016.90}
}""",
    "he2016identity": """@inproceedings{he2016identity,
  author = {He, Kaiming and Zhang, Xiangyu and Ren, Shaoqing and Sun, Jian},
  title = {Identity Mappings in Deep Residual Networks},
  booktitle = {Computer Vision -- ECCV 2016},
  series = {Lecture Notes in Computer Science},
  volume = {9908},
  pages = {630--645},
  publisher = {Springer},
  year = {2016},
  doi = {10.1007/978-3-319-46493-0_38}
}""",
    "paszke2019pytorch": """@inproceedings{paszke2019pytorch,
  author = {Paszke, Adam and Gross, Sam and Massa, Francisco and Lerer, Adam and Bradbury, James and Chanan, Gregory
            and Killeen, Trevor and Lin, Zeming and Gimelshein, Natalia and Antiga, Luca and Desmaison, Alban
            and K{\\"o}pf, Andreas and Yang, Edward and DeVito, Zachary and Raison, Martin and Tejani, Alykhan
            and Chilamkurthy, Sasank and Steiner, Benoit and Fang, Lu and Bai, Junjie and Chintala, Soumith},
  title = {{PyTorch}: An Imperative Style, High-Performance Deep Learning Library},
  booktitle = {Advances in Neural Information Processing Systems},
  volume = {32},
  pages = {8024--8035},
  year = {2019}
}""",
    "akiba2019optuna": """@inproceedings{akiba2019optuna,
  author = {Akiba, Takuya and Sano, Shotaro and Yanase, Toshihiko and Ohta, Takeru and Koyama, Masanori},
  title = {Optuna: A Next-generation Hyperparameter Optimization Framework},
  booktitle = {Proceedings of the 25th ACM SIGKDD International Conference on Knowledge Discovery \\& Data Mining},
  pages = {2623--2631},
  year = {2019},
  doi = {10.1145/3292500.3330701}
}""",
    "liaw2018tune": """@article{liaw2018tune,
  author = {Liaw, Richard and Liang, Eric and Nishihara, Robert and Moritz, Philipp and Gonzalez, Joseph E.
            and Stoica, Ion},
  title = {Tune: A Research Platform for Distributed Model Selection and Training},
  journal = {arXiv preprint arXiv:1807.05118},
  year = {2018}
}""",
    "bergstra2011algorithms": """@inproceedings{bergstra2011algorithms,
  author = {Bergstra, James and Bardenet, R{\\'e}mi and Bengio, Yoshua and K{\\'e}gl, Bal{\\'a}zs},
  title = {Algorithms for Hyper-Parameter Optimization},
  booktitle = {Advances in Neural Information Processing Systems},
  volume = {24},
  pages = {2546--2554},
  year = {2011}
}""",
    "li2020system": """@inproceedings{li2020system,
  author = {Li, Liam and Jamieson, Kevin and Rostamizadeh, Afshin and Gonina, Ekaterina and Ben-tzur, Jonathan
            and Hardt, Moritz and Recht, Benjamin and Talwalkar, Ameet},
  title = {A System for Massively Parallel Hyperparameter Tuning},
  booktitle = {Proceedings of Machine Learning and Systems},
  volume = {2},
  pages = {230--246},
  year = {2020}
}""",
    "loshchilov2017sgdr": """@inproceedings{loshchilov2017sgdr,
  author = {Loshchilov, Ilya and Hutter, Frank},
  title = {{SGDR}: Stochastic Gradient Descent with Warm Restarts},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year = {2017}
}""",
    "holm1979simple": """@article{holm1979simple,
  author = {Holm, Sture},
  title = {A Simple Sequentially Rejective Multiple Test Procedure},
  journal = {Scandinavian Journal of Statistics},
  volume = {6},
  number = {2},
  pages = {65--70},
  year = {1979}
}""",
    "mcnemar1947note": """@article{mcnemar1947note,
  author = {McNemar, Quinn},
  title = {Note on the Sampling Error of the Difference Between Correlated Proportions or Percentages},
  journal = {Psychometrika},
  volume = {12},
  number = {2},
  pages = {153--157},
  year = {1947},
  doi = {10.1007/BF02295996}
}""",
    "li2018visualizing": """@inproceedings{li2018visualizing,
  author = {Li, Hao and Xu, Zheng and Taylor, Gavin and Studer, Christoph and Goldstein, Tom},
  title = {Visualizing the Loss Landscape of Neural Nets},
  booktitle = {Advances in Neural Information Processing Systems},
  volume = {31},
  pages = {6389--6399},
  year = {2018}
}""",
    "balduzzi2017shattered": """@inproceedings{balduzzi2017shattered,
  author = {Balduzzi, David and Frean, Marcus and Leary, Lennox and Lewis, J. P. and Ma, Kurt Wan-Duo
            and McWilliams, Brian},
  title = {The Shattered Gradients Problem: If resnets are the answer, then what is the question?},
  booktitle = {Proceedings of the 34th International Conference on Machine Learning},
  series = {Proceedings of Machine Learning Research},
  volume = {70},
  pages = {342--350},
  year = {2017}
}""",
    "brock2021characterizing": """@inproceedings{brock2021characterizing,
  author = {Brock, Andrew and De, Soham and Smith, Samuel L.},
  title = {Characterizing Signal Propagation to Close the Performance Gap in Unnormalized {ResNets}},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year = {2021}
}""",
    "veit2016residual": """@inproceedings{veit2016residual,
  author = {Veit, Andreas and Wilber, Michael J. and Belongie, Serge},
  title = {Residual Networks Behave Like Ensembles of Relatively Shallow Networks},
  booktitle = {Advances in Neural Information Processing Systems},
  volume = {29},
  pages = {550--558},
  year = {2016}
}""",
    "lecun1998gradient": """@article{lecun1998gradient,
  author = {LeCun, Yann and Bottou, L{\\'e}on and Bengio, Yoshua and Haffner, Patrick},
  title = {Gradient-Based Learning Applied to Document Recognition},
  journal = {Proceedings of the IEEE},
  volume = {86},
  number = {11},
  pages = {2278--2324},
  year = {1998},
  doi = {10.1109/5.726791}
}""",
    "alpaydin1998optical": """@misc{alpaydin1998optical,
  author = {Alpaydin, Ethem and Kaynak, Cenk},
  title = {Optical Recognition of Handwritten Digits},
  howpublished = {UCI Machine Learning Repository},
  year = {1998}
}""",
    "pedregosa2011scikit": """@article{pedregosa2011scikit,
  author = {Pedregosa, Fabian and Varoquaux, Ga{\\"e}l and Gramfort, Alexandre and Michel, Vincent
            and Thirion, Bertrand and Grisel, Olivier and Blondel, Mathieu and Prettenhofer, Peter and Weiss, Ron
            and Dubourg, Vincent and Vanderplas, Jake and Passos, Alexandre and Cournapeau, David
            and Brucher, Matthieu and Perrot, Matthieu and Duchesnay, {\\'E}douard},
  title = {Scikit-learn: Machine Learning in {P}ython},
  journal = {Journal of Machine Learning Research},
  volume = {12},
  pages = {2825--2830},
  year = {2011}
}""",
    "xiao2017fashion": """@article{xiao2017fashion,
  author = {Xiao, Han and Rasul, Kashif and Vollgraf, Roland},
  title = {Fashion-{MNIST}: a Novel Image Dataset for Benchmarking Machine Learning Algorithms},
  journal = {arXiv preprint arXiv:1708.07747},
  year = {2017}
}""",
    "clanuwat2018deep": """@article{clanuwat2018deep,
  author = {Clanuwat, Tarin and Bober-Irizar, Mikel and Kitamoto, Asanobu and Lamb, Alex and Yamamoto, Kazuaki
            and Ha, David},
  title = {Deep Learning for Classical {J}apanese Literature},
  journal = {arXiv preprint arXiv:1812.01718},
  year = {2018}
}""",
    "krizhevsky2009learning": """@techreport{krizhevsky2009learning,
  author = {Krizhevsky, Alex},
  title = {Learning Multiple Layers of Features from Tiny Images},
  institution = {University of Toronto},
  year = {2009}
}""",
    "dodge2019show": """@inproceedings{dodge2019show,
  author = {Dodge, Jesse and Gururangan, Suchin and Card, Dallas and Schwartz, Roy and Smith, Noah A.},
  title = {Show Your Work: Improved Reporting of Experimental Results},
  booktitle = {Proceedings of the 2019 Conference on Empirical Methods in Natural Language Processing and the 9th
               International Joint Conference on Natural Language Processing (EMNLP-IJCNLP)},
  pages = {2185--2194},
  year = {2019},
  doi = {10.18653/v1/D19-1224}
}""",
    "bouthillier2021accounting": """@inproceedings{bouthillier2021accounting,
  author = {Bouthillier, Xavier and Delaunay, Pierre and Bronzi, Mirko and Trofimov, Assya and Nichyporuk, Brennan
            and Szeto, Justin and Sepah, Naz and Raff, Edward and Madan, Kanika and Voleti, Vikram and Ebrahimi Kahou,
            Samira and Michalski, Vincent and Serdyuk, Dmitriy and Arbel, Tal and Pal, Chris and Varoquaux, Ga{\\"e}l
            and Vincent, Pascal},
  title = {Accounting for Variance in Machine Learning Benchmarks},
  booktitle = {Proceedings of Machine Learning and Systems},
  volume = {3},
  pages = {747--769},
  year = {2021}
}""",
    "tang2020showing": """@inproceedings{tang2020showing,
  author = {Tang, Raphael and Lee, Jaejun and Xin, Ji and Liu, Xinyu and Yu, Yaoliang and Lin, Jimmy},
  title = {Showing Your Work Doesn't Always Work},
  booktitle = {Proceedings of the 58th Annual Meeting of the Association for Computational Linguistics},
  pages = {2766--2772},
  publisher = {Association for Computational Linguistics},
  year = {2020},
  doi = {10.18653/v1/2020.acl-main.246}
}""",
    "stein1945two": """@article{stein1945two,
  author = {Stein, Charles},
  title = {A Two-Sample Test for a Linear Hypothesis Whose Power is Independent of the Variance},
  journal = {The Annals of Mathematical Statistics},
  volume = {16},
  number = {3},
  pages = {243--258},
  year = {1945},
  doi = {10.1214/aoms/1177731088}
}""",
    "schuirmann1987comparison": """@article{schuirmann1987comparison,
  author = {Schuirmann, Donald J.},
  title = {A Comparison of the Two One-Sided Tests Procedure and the Power Approach for Assessing the Equivalence of
           Average Bioavailability},
  journal = {Journal of Pharmacokinetics and Biopharmaceutics},
  volume = {15},
  number = {6},
  pages = {657--680},
  year = {1987},
  doi = {10.1007/BF01068419}
}""",
    "lan1983discrete": """@article{lan1983discrete,
  author = {Lan, K. K. Gordon and DeMets, David L.},
  title = {Discrete Sequential Boundaries for Clinical Trials},
  journal = {Biometrika},
  volume = {70},
  number = {3},
  pages = {659--663},
  year = {1983},
  doi = {10.1093/biomet/70.3.659}
}""",
    "lakens2017equivalence": """@article{lakens2017equivalence,
  author = {Lakens, Dani{\\"e}l},
  title = {Equivalence Tests: A Practical Primer for t Tests, Correlations, and Meta-Analyses},
  journal = {Social Psychological and Personality Science},
  volume = {8},
  number = {4},
  pages = {355--362},
  year = {2017},
  doi = {10.1177/1948550617697177}
}""",
    "gupta2011intention": """@article{gupta2011intention,
  author = {Gupta, Sandeep K.},
  title = {Intention-to-treat concept: A review},
  journal = {Perspectives in Clinical Research},
  volume = {2},
  number = {3},
  pages = {109--112},
  year = {2011},
  doi = {10.4103/2229-3485.83221}
}""",
}


def bibtex(keys: list[str]) -> str:
    """references.bib: the entries of `keys`, in that order."""
    return "\n\n".join(ENTRIES[k] for k in keys) + "\n"


ACCENTS = {"\\\"o": "ö", "\\\"e": "ë", "\\'e": "é", "\\'E": "É", "\\'a": "á", "\\&": "&"}


def fields(key: str) -> dict[str, str]:
    """The fields of an entry as plain text (braces dropped, the accents used above turned into letters)."""
    entry = ENTRIES[key]
    out: dict[str, str] = {}
    i = entry.index(",") + 1
    while True:
        eq = entry.find("=", i)
        if eq < 0:
            return out
        name = entry[i:eq].strip().strip(",").strip()
        start = entry.index("{", eq)
        depth, j = 0, start
        while True:
            depth += {"{": 1, "}": -1}.get(entry[j], 0)
            if depth == 0:
                break
            j += 1
        value = entry[start + 1:j]
        for tex, letter in ACCENTS.items():
            value = value.replace("{" + tex + "}", letter).replace(tex, letter)
        out[name] = " ".join(value.replace("{", "").replace("}", "").split())
        i = j + 1


def plain(key: str) -> str:
    """'Authors (year). Title. Venue.' for a reader."""
    f = fields(key)
    venue = f.get("booktitle") or f.get("journal") or f.get("howpublished") or f.get("institution") or ""
    authors = f.get("author", "").replace(" and ", "; ")
    title = f.get("title", "")
    return f"{authors} ({f.get('year', 'n.d.')}). {title}{'' if title.endswith(('?', '!', '.')) else '.'} {venue}."


def _author_year(key: str) -> str:
    f = fields(key)
    names = [a.split(",")[0].strip() for a in f.get("author", key).split(" and ")]
    who = names[0] if len(names) == 1 else f"{names[0]} and {names[1]}" if len(names) == 2 else f"{names[0]} et al."
    return f"{who} {f.get('year', 'n.d.')}"


def short(key: str) -> str:
    """'He et al. 2016a', 'Loshchilov and Hutter 2017', 'Holm 1979': an author-year citation for a reader, with a
    letter where two works share authors and year (in the order of ENTRIES)."""
    mine = _author_year(key)
    same = [k for k in ENTRIES if _author_year(k) == mine]
    return mine + ("abcdefghij"[same.index(key)] if len(same) > 1 else "")


CITATION = re.compile(r"\[(@[A-Za-z0-9_]+(?:;\s*@[A-Za-z0-9_]+)*)\]")


def cited_as_text(text: str) -> str:
    """Pandoc citations ('[@he2016deep; @he2016identity]') as a reader sees them: '(He et al. 2016; He et al. 2016)'."""
    def one(m: re.Match) -> str:
        keys = [k.strip().lstrip("@") for k in m.group(1).split(";")]
        return "(" + "; ".join(short(k) if k in ENTRIES else k for k in keys) + ")"
    return CITATION.sub(one, text)
