/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * kpbuild-macros.h: what a patch's source can say to kpbuild.
 *
 * kpbuild puts this header on the include path of every unit it compiles,
 * so a patch adds `#include "kpbuild-macros.h"` where it needs it.
 *
 * Callbacks: the livepatch core calls them for the object (vmlinux, or the
 * module) the unit belongs to, as struct klp_callbacks describes
 * (Documentation/livepatch/callbacks.rst). Each takes the struct klp_object;
 * the pre-patch callback returns 0 or a negative errno, which stops the
 * patch from being applied (or the module from loading). A callback must be
 * a function the patch adds; one callback of each kind per object.
 *
 *	static int kpb_setup(struct klp_object *obj) { ... return 0; }
 *	KPBUILD_PRE_PATCH_CALLBACK(kpb_setup);
 *
 * Shadow variables: call klp_shadow_alloc(), klp_shadow_get(),
 * klp_shadow_free_all() and friends of <linux/livepatch.h> directly; they are
 * exported, so the patched code reaches them like any export.
 */
#ifndef _KPBUILD_MACROS_H
#define _KPBUILD_MACROS_H

struct klp_object;

/* int fn(struct klp_object *): before the patch applies; non-zero stops it. */
#define KPBUILD_PRE_PATCH_CALLBACK(fn)						\
	static int (* const __kpbuild_pre_patch_##fn)(struct klp_object *)	\
	__attribute__((__used__, __section__(".kpbuild.callbacks.pre_patch"))) = fn
/* void fn(struct klp_object *): after the patch applied. */
#define KPBUILD_POST_PATCH_CALLBACK(fn)						\
	static void (* const __kpbuild_post_patch_##fn)(struct klp_object *)	\
	__attribute__((__used__, __section__(".kpbuild.callbacks.post_patch"))) = fn
/* void fn(struct klp_object *): before the patch is removed. */
#define KPBUILD_PRE_UNPATCH_CALLBACK(fn)					\
	static void (* const __kpbuild_pre_unpatch_##fn)(struct klp_object *)	\
	__attribute__((__used__, __section__(".kpbuild.callbacks.pre_unpatch"))) = fn
/* void fn(struct klp_object *): after the patch was removed. */
#define KPBUILD_POST_UNPATCH_CALLBACK(fn)					\
	static void (* const __kpbuild_post_unpatch_##fn)(struct klp_object *)	\
	__attribute__((__used__, __section__(".kpbuild.callbacks.post_unpatch"))) = fn

#endif /* _KPBUILD_MACROS_H */
