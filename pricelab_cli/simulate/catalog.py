"""Synthetic product catalogs and their planted substitutes graph (``simulate_catalog``).

The layout (categories, communities, edges) is described in the package docstring
(:mod:`pricelab_cli.simulate`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from pricelab_cli.errors import UsageError
from pricelab_cli.simulate.model import BRAND_MULTIPLIERS, DEFAULT_BASE_PRICE
from pricelab_cli.simulate.settings import check_count

EDGE_WEIGHT_LOW, EDGE_WEIGHT_HIGH = 0.4, 0.9
CROSS_EDGE_RATE = 0.2


def simulate_catalog(
    n_products: int = 200,
    n_groups: int = 10,
    community_size: int = 5,
    seed: int = 0,
    id_prefix: str | None = None,
    elasticity_range: tuple[float, float] | None = None,
    price_change_range: tuple[float, float] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Simulate a product catalog and its planted substitutes graph.

    Parameters
    ----------
    n_products : number of products (ids 1..n).
    n_groups : number of categories (``cat_00``, ...), sizes differing by at most one.
    community_size : size of the planted substitute communities inside each category.
    seed : seed of the only random generator used.
    id_prefix : when given, ids are text ``f"{id_prefix}{i:06d}"`` instead of integers.
    elasticity_range : (low, high): adds an ``elasticity`` column, one own-price elasticity
        per category drawn uniformly in the range (``simulate_sales`` plants it).
    price_change_range : (low, high): adds a ``price_change`` column, each product's own
        relative price change when treated (a policy), drawn uniformly in the range.
        Both come from a generator of their own: the other columns and the edges are the
        same with and without them.

    Returns
    -------
    products : ``product_id``, ``category``, ``community`` (planted community, Int64),
        ``size``, ``quality`` (about standard normal), ``base_price`` (lognormal, median
        near 20, rounded to cents), ``brand`` (one of ``BRAND_MULTIPLIERS``).
    true_edges : ``src``, ``dst``, ``weight`` (cross-price elasticity in [0.4, 0.9]),
        ``community`` (the community of ``src`` for within-community edges, -1 for the
        sparse edges between communities of a category), sorted by ``src``, ``dst``.
    """
    _check_catalog_arguments(n_products, n_groups, community_size, seed)
    _check_range("elasticity_range", elasticity_range)
    _check_range("price_change_range", price_change_range, above=-1.0)
    rng = np.random.default_rng(seed)
    # The draws are made in this order: layout, features, cross-community edges, weights.
    layout = _Layout.draw(rng, n_products, n_groups, community_size)
    quality = rng.standard_normal(n_products)
    size = rng.lognormal(0.0, 0.5, n_products)
    price_noise = rng.standard_normal(n_products)
    base_price = DEFAULT_BASE_PRICE * np.exp(0.15 * quality + 0.3 * np.log(size) + 0.3 * price_noise)
    brand_index = rng.integers(0, len(BRAND_MULTIPLIERS), n_products)
    edge_src, edge_dst, edge_comm = layout.edges(rng)
    weight = rng.uniform(EDGE_WEIGHT_LOW, EDGE_WEIGHT_HIGH, len(edge_src))
    edge_order = np.lexsort((edge_dst, edge_src))

    ids = _catalog_ids(n_products, id_prefix)
    width = max(2, len(str(n_groups - 1)))
    products = pl.DataFrame(
        {
            "product_id": ids,
            "category": "cat_" + pl.Series(layout.category).cast(pl.String).str.zfill(width),
            "community": pl.Series(layout.community, dtype=pl.Int64),
            "size": np.round(size, 3),
            "quality": np.round(quality, 4),
            "base_price": np.maximum(np.round(base_price, 2), 0.01),
            "brand": pl.Series(list(BRAND_MULTIPLIERS)).gather(brand_index),
        }
    )
    planted = np.random.default_rng([seed, 1])
    if elasticity_range is not None:
        by_category = planted.uniform(*elasticity_range, n_groups)
        products = products.with_columns(elasticity=pl.Series(np.round(by_category[layout.category], 4)))
    if price_change_range is not None:
        change = planted.uniform(*price_change_range, n_products)
        products = products.with_columns(price_change=pl.Series(np.round(change, 4)))
    true_edges = pl.DataFrame(
        {
            "src": ids.gather(edge_src[edge_order]),
            "dst": ids.gather(edge_dst[edge_order]),
            "weight": weight[edge_order],
            "community": pl.Series(edge_comm[edge_order], dtype=pl.Int64),
        }
    )
    return products, true_edges


def _check_catalog_arguments(n_products: int, n_groups: int, community_size: int, seed: int) -> None:
    check_count("n_products", n_products, 1)
    check_count("n_groups", n_groups, 1)
    check_count("community_size", community_size, 1)
    check_count("seed", seed, 0)
    if n_groups > n_products:
        raise UsageError(
            f"`n_groups` is {n_groups} but there are only {n_products} products; "
            "every category needs at least one product."
        )


def _check_range(name: str, bounds: tuple[float, float] | None, above: float | None = None) -> None:
    if bounds is None:
        return
    low, high = bounds
    if not (np.isfinite(low) and np.isfinite(high) and low <= high) or (above is not None and low <= above):
        floor = f", both above {above:g}" if above is not None else ""
        raise UsageError(f"`{name}` must be two finite numbers LOW,HIGH with LOW <= HIGH{floor}; got {bounds!r}.")


@dataclasses.dataclass(frozen=True, eq=False)
class _Layout:
    """Each product's category and planted community, and where it sits in them.

    Each category is laid out in a random order (``order`` lists the products category by
    category); ``rank`` is a product's place in its category's layout and the community is
    the block of ``community_size`` consecutive ranks holding it.
    """

    category: np.ndarray  # category per product
    order: np.ndarray  # products by category, each category in random order
    cat_size: np.ndarray  # products per category
    cat_start: np.ndarray  # position of each category's first product in ``order``
    community: np.ndarray  # planted community per product (numbered across categories)
    comm_first_rank: np.ndarray  # per product: the first rank of its community
    comm_len: np.ndarray  # per product: the size of its community

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int, n_groups: int, community_size: int) -> _Layout:
        category = rng.permutation(np.arange(n) % n_groups)
        # Sorting by category then a random key lays each category out in random order, so
        # consecutive ranks form the communities without a loop over categories.
        order = np.lexsort((rng.random(n), category))
        cat_size = np.bincount(category, minlength=n_groups)
        cat_start = np.cumsum(cat_size) - cat_size
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n) - cat_start[category[order]]
        local = rank // community_size
        communities_per_cat = -(-cat_size // community_size)
        community = (np.cumsum(communities_per_cat) - communities_per_cat)[category] + local
        comm_first_rank = local * community_size
        comm_len = np.minimum(community_size, cat_size[category] - comm_first_rank)
        return cls(category, order, cat_size, cat_start, community, comm_first_rank, comm_len)

    def edges(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Source rows, destination rows and community (-1 between communities) of the
        edges: every ordered pair inside a community, then the sparse cross edges."""
        n = len(self.category)
        outside = self.cat_size[self.category] - self.comm_len
        cross_src = np.flatnonzero((outside > 0) & (rng.random(n) < CROSS_EDGE_RATE))
        target_draw = rng.random(n)[cross_src]
        # Draw a rank among the category's products outside the source's community, then skip
        # over that community's block of ranks.
        target_rank = np.floor(target_draw * outside[cross_src]).astype(np.int64)
        target_rank += np.where(target_rank >= self.comm_first_rank[cross_src], self.comm_len[cross_src], 0)
        cross_dst = self.order[self.cat_start[self.category[cross_src]] + target_rank]

        members = pl.DataFrame({"src_row": np.arange(n), "community": self.community})
        within = (
            members.join(members.rename({"src_row": "dst_row"}), on="community")
            .filter(pl.col("src_row") != pl.col("dst_row"))
            .sort("src_row", "dst_row")
        )
        return (
            np.concatenate([within["src_row"].to_numpy(), cross_src]),
            np.concatenate([within["dst_row"].to_numpy(), cross_dst]),
            np.concatenate([within["community"].to_numpy(), np.full(len(cross_src), -1)]),
        )


def _catalog_ids(n: int, id_prefix: str | None) -> pl.Series:
    numbers = pl.Series("product_id", np.arange(1, n + 1, dtype=np.int64))
    if id_prefix is None:
        return numbers
    return (id_prefix + numbers.cast(pl.String).str.zfill(6)).alias("product_id")
