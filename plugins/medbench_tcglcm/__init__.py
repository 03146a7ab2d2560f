"""Domain assimilation (Chen & Luo, 2024): texture and colour modules and the GLCM loss.

So far this package holds the differentiable grey-level co-occurrence matrix
(:mod:`medbench_tcglcm.glcm`); the defenses ``tc`` and ``tc-glcm`` that use it come next
(issue 3), and the package is registered as a plugin once they exist.
"""
