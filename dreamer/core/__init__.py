"""The world-model core shared by every agent. It imports no agent."""

from dreamer.core.actor_critic import ActorCritic, ACState, action_dist, lambda_return
from dreamer.core.rssm import RSSM, RSSMCell, kl_divergence
from dreamer.core.world_model import WorldModel, image_target

__all__ = ["ActorCritic", "ACState", "RSSM", "RSSMCell", "WorldModel", "action_dist",
           "image_target", "kl_divergence", "lambda_return"]
