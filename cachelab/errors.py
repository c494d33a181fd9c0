"""Errors cachelab raises on bad input. Each names the field, the value and what is allowed."""


class CachelabError(Exception):
    """Base class of cachelab's own errors."""


class SiteError(CachelabError, ValueError):
    """The denoiser's sites cannot be found or the given site patterns are wrong."""


class PolicyError(CachelabError, ValueError):
    """Unknown policy, bad policy parameters or a policy that cannot run on this model."""


class TargetError(CachelabError, TypeError):
    """The object given to :func:`cachelab.apply` is neither a module nor a pipeline."""


class AlreadyAppliedError(CachelabError, RuntimeError):
    """A model already carries cachelab hooks."""


class HookStackError(CachelabError, RuntimeError):
    """A cachelab hook cannot be detached (or extended): a wrapper cachelab cannot unwrap sits on top of it."""


class LayoutError(CachelabError, ValueError):
    """A tensor has a layout a policy cannot work on."""


class ParallelError(CachelabError, ValueError):
    """Context parallelism cannot run this generation as asked: a world size that does not divide the sequence."""


class NothingReusedWarning(UserWarning):
    """A whole generation ran with the policy attached and reused nothing: the policy cost time and saved none.

    Usually its windows never met this sampling schedule (timestep units against a short or shifted schedule)
    or its sites never ran. Filter it (``warnings.simplefilter("ignore", NothingReusedWarning)``) when a
    never-reusing schedule is what you want, as in overhead measurements."""
