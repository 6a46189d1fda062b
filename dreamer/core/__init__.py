"""The world model every agent shares, and the actor-critic two of them use. It imports nothing
of this project outside `dreamer.core`: no agent, no training loop, no infrastructure."""

from dreamer.core.actor_critic import ActorCritic, ACState, action_dist, lambda_return
from dreamer.core.latents import CategoricalLatent, GaussianLatent, make_latent
from dreamer.core.rssm import RSSM, RSSMCell
from dreamer.core.world_model import WorldModel, image_target

__all__ = ["ActorCritic", "ACState", "CategoricalLatent", "GaussianLatent", "RSSM", "RSSMCell",
           "WorldModel", "action_dist", "image_target", "lambda_return", "make_latent"]
